"""The snapshot file: the store's own `snapshot()` bytes plus the Raft position they stand for.

Layout: MAGIC | u32 header length | header (JSON) | u64 body length | body | u32 crc32(header + body).
The header holds the index and term of the last entry the snapshot covers and the last two log entries
themselves (`prev`, `last`, command bytes base64), so that after loading a snapshot the log still starts with
two real entries, as PySyncObj expects (it reads `log[0]` for the snapshot boundary and `log[1]` after a
snapshot transfer), and never with a made-up command that could be sent to a follower.

Written with temp file + fsync + rename + directory fsync (see `files.atomic_write`); read back with a CRC
check, so a half-written or damaged file is refused instead of restored.
"""
from __future__ import annotations

import base64
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import orjson

from raftqueue.raft.files import fsync_dir, write_paced

MAGIC = b"RQSNAP01"
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

Entry = tuple[bytes, int, int]


class CorruptSnapshot(RuntimeError):
    """The snapshot file is incomplete or damaged."""


@dataclass
class SnapshotHeader:
    index: int
    term: int
    prev: Entry
    last: Entry
    members: list[str] = field(default_factory=list)  # Raft addresses (kept for older readers)
    # The full member list as of `index` ({"id", "raft_addr", "http_addr"}, see raft.membership); None in
    # snapshots written before run-time membership changes: the node's --peer flags hold then.
    member_specs: list[dict] | None = None

    def to_json(self) -> bytes:
        def enc(entry: Entry) -> list:
            return [entry[1], entry[2], base64.b64encode(entry[0]).decode()]
        raw = {"index": self.index, "term": self.term, "prev": enc(self.prev), "last": enc(self.last),
               "members": self.members}
        if self.member_specs is not None:
            raw["member_specs"] = self.member_specs
        return orjson.dumps(raw)

    @classmethod
    def from_json(cls, data: bytes) -> "SnapshotHeader":
        raw = orjson.loads(data)

        def dec(item: list) -> Entry:
            return (base64.b64decode(item[2]), int(item[0]), int(item[1]))
        return cls(index=int(raw["index"]), term=int(raw["term"]), prev=dec(raw["prev"]),
                   last=dec(raw["last"]), members=list(raw.get("members", [])),
                   member_specs=_specs(raw.get("member_specs")))

    @property
    def base_entries(self) -> list[Entry]:
        return [self.prev, self.last]


def _specs(raw: object) -> list[dict] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise CorruptSnapshot("member_specs is not a list of members")
    try:
        return [{"id": str(m["id"]), "raft_addr": str(m["raft_addr"]), "http_addr": str(m["http_addr"])}
                for m in raw]
    except KeyError as exc:
        raise CorruptSnapshot(f"a member without {exc}") from None


def encode_snapshot(header: SnapshotHeader, body: bytes) -> list[bytes]:
    head = header.to_json()
    crc = zlib.crc32(body, zlib.crc32(head))
    return [MAGIC, _U32.pack(len(head)), head, _U64.pack(len(body)), body, _U32.pack(crc)]


def write_snapshot(path: str | os.PathLike[str], header: SnapshotHeader, body: bytes, fsync: bool = True,
                   bytes_per_s: float | None = None) -> None:
    """Write atomically: a crash leaves the previous snapshot or the complete new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for part in encode_snapshot(header, body):
            write_paced(f, part, fsync, bytes_per_s=bytes_per_s)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


def _read_from(f: BinaryIO, keep_body: bool, chunk_bytes: int = 4 << 20) -> tuple[SnapshotHeader, bytes | None]:
    """Parse and verify a snapshot from a file object. The body is returned only if `keep_body`; otherwise it
    is only checksummed, chunk by chunk (zlib.crc32 lets other threads run meanwhile)."""
    if f.read(len(MAGIC)) != MAGIC:
        raise CorruptSnapshot("not a raftqueue snapshot (bad magic)")
    try:
        (head_len,) = _U32.unpack(f.read(_U32.size))
        head = f.read(head_len)
        (body_len,) = _U64.unpack(f.read(_U64.size))
    except struct.error as exc:
        raise CorruptSnapshot(f"truncated snapshot: {exc}") from exc
    if len(head) != head_len:
        raise CorruptSnapshot("truncated snapshot")
    crc, body = zlib.crc32(head), None
    if keep_body:
        body = f.read(body_len)
        if len(body) != body_len:
            raise CorruptSnapshot("truncated snapshot")
        crc = zlib.crc32(body, crc)
    else:
        left = body_len
        while left > 0:
            chunk = f.read(min(chunk_bytes, left))
            if not chunk:
                raise CorruptSnapshot("truncated snapshot")
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
    tail = f.read(_U32.size)
    if len(tail) != _U32.size or _U32.unpack(tail)[0] != crc:
        raise CorruptSnapshot("snapshot checksum mismatch")
    try:
        return SnapshotHeader.from_json(head), body
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CorruptSnapshot(f"bad snapshot header: {exc}") from exc


def read_snapshot_header(path: str | os.PathLike[str], chunk_bytes: int = 4 << 20) -> SnapshotHeader:
    """The header of the snapshot file at `path`, with the whole file's CRC checked but the body not loaded:
    deciding whether a snapshot is needed must not load hundreds of MB."""
    with open(path, "rb") as f:
        return _read_from(f, keep_body=False, chunk_bytes=chunk_bytes)[0]


def read_snapshot(path: str | os.PathLike[str]) -> tuple[SnapshotHeader, bytes] | None:
    """The snapshot at `path`, CRC-checked, or None if there is none."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return None
    with f:
        header, body = _read_from(f, keep_body=True)
    assert body is not None
    return header, body
