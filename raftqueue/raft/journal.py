"""A durable Raft log for PySyncObj: append-only segment files, CRC-checked records, explicit fsync.

PySyncObj's own FileJournal is an mmap that is never fsync'ed, rewrites itself in place when trimmed, and keeps
term/vote in a `.meta` file written without fsync (PYSYNCOBJ-NOTES.md). This class keeps the same interface
(`add`, `deleteEntriesFrom`, `deleteEntriesTo`, item access, term/vote/commit accessors) so the library's Raft
code can use it unchanged, but:

- records are appended to segment files `log-<first index>.seg`; `sync()` flushes and fdatasyncs them. The
  replica calls `sync()` before a follower acknowledges entries and before the leader counts its own copy.
- a torn record at the tail of the last segment (a crash mid-write) is cut off on open; damage anywhere else
  stops the node with `CorruptLog` instead of silently dropping entries.
- truncation of a conflicting tail cuts the file at the record boundary and fsyncs; trimming the head after a
  snapshot only deletes whole segment files, so a crash in between never loses an entry the snapshot lacks.
- term and vote are written to `meta.json` atomically and fsync'ed before `setCurrentTerm` returns.

Entries are `(command: bytes, index: int, term: int)`, as in PySyncObj. Position 0 is the oldest entry kept;
after a snapshot the first two entries come from the snapshot file (the last two entries it covers).
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Iterable, Iterator

import orjson

from raftqueue.raft.files import atomic_write, fsync_dir

Entry = tuple[bytes, int, int]

# PySyncObj's NO_OP command: the command type byte 1 (syncobj._COMMAND_TYPE.NO_OP).
NO_OP_COMMAND = b"\x01"

_RECORD = struct.Struct("<IIQQ")  # command length, crc32(index, term, command), index, term
SEGMENT_BYTES = 64 * 1024 * 1024


class CorruptLog(RuntimeError):
    """The log on disk is damaged somewhere other than a torn tail: refuse to start rather than lose data."""


def _crc(index: int, term: int, command: bytes) -> int:
    return zlib.crc32(command, zlib.crc32(struct.pack("<QQ", index, term)))


def encode_record(command: bytes, index: int, term: int) -> bytes:
    return _RECORD.pack(len(command), _crc(index, term, command), index, term) + command


def _read_records(data: bytes) -> Iterator[tuple[int, Entry]]:
    """Yield (offset, entry) for each valid record; stop at the first invalid or incomplete one."""
    offset = 0
    size = len(data)
    while offset + _RECORD.size <= size:
        length, crc, index, term = _RECORD.unpack_from(data, offset)
        end = offset + _RECORD.size + length
        if end > size:
            return
        command = bytes(data[offset + _RECORD.size:end])
        if _crc(index, term, command) != crc:
            return
        yield offset, (command, index, term)
        offset = end


def _valid_length(data: bytes) -> int:
    """Byte length of the valid record prefix of a segment."""
    end = 0
    for offset, (command, _, _) in _read_records(data):
        end = offset + _RECORD.size + len(command)
    return end


class DurableJournal:
    """PySyncObj journal interface backed by fsync'ed segment files in `directory`."""

    def __init__(self, directory: str | os.PathLike[str], base: list[Entry] | None = None,
                 fsync: bool = True, segment_bytes: int = SEGMENT_BYTES) -> None:
        self._dir = Path(directory)
        self._dir.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._meta_path = self._dir / "meta.json"
        self._meta = self._load_meta()
        self._meta_dirty = False
        self._entries: list[Entry] = []
        # Where each entry lives on disk: (segment first index, byte offset); None for snapshot-provided entries.
        self._where: list[tuple[int, int] | None] = []
        self._segments: list[int] = []  # first index of each segment file, ascending
        self._file = None
        self._file_size = 0
        self._dirty = False
        self._bytes = 0
        self._load(base or [])

    # ----- opening -------------------------------------------------------------------------------------------
    def _segment_path(self, first_index: int) -> Path:
        return self._dir / f"log-{first_index:020d}.seg"

    def _load_meta(self) -> dict:
        try:
            return orjson.loads(self._meta_path.read_bytes())
        except FileNotFoundError:
            return {}
        except orjson.JSONDecodeError as exc:
            raise CorruptLog(f"{self._meta_path} is not valid JSON: {exc}") from exc

    def _load(self, base: list[Entry]) -> None:
        names = sorted(p.name for p in self._dir.glob("log-*.seg"))
        self._segments = [int(name[4:-4]) for name in names]
        for entry in base:
            self._entries.append(entry)
            self._where.append(None)
        for position, first in enumerate(self._segments):
            path = self._segment_path(first)
            data = path.read_bytes()
            valid = _valid_length(data)
            if valid != len(data):
                if position != len(self._segments) - 1:
                    raise CorruptLog(f"{path}: damaged record at byte {valid} in a segment that is not the last")
                with open(path, "r+b") as f:  # a torn tail from a crash mid-append: cut it off for good
                    f.truncate(valid)
                    os.fsync(f.fileno())
            for offset, entry in _read_records(data[:valid]):
                self._take_loaded(entry, (first, offset))
        if not self._entries:
            self._open_segment(1)
            self.add(NO_OP_COMMAND, 1, 0)
            self.sync()
        elif self._segments:
            self._reopen_last_segment()
        else:
            self._open_segment(self._entries[-1][1] + 1)

    def _take_loaded(self, entry: Entry, where: tuple[int, int]) -> None:
        index = entry[1]
        if self._entries:
            last = self._entries[-1][1]
            if index <= last:
                return  # already covered by the snapshot-provided base (or an older segment's copy)
            if index != last + 1:
                raise CorruptLog(f"log gap: entry {index} follows entry {last}")
        self._entries.append(entry)
        self._where.append(where)
        self._bytes += len(entry[0])

    def _reopen_last_segment(self) -> None:
        first = self._segments[-1]
        path = self._segment_path(first)
        self._file = open(path, "ab")
        self._file_size = path.stat().st_size

    def _open_segment(self, first_index: int) -> None:
        if self._file is not None:
            self._close_file()
        path = self._segment_path(first_index)
        self._file = open(path, "ab")
        self._file_size = path.stat().st_size
        if first_index not in self._segments:
            self._segments.append(first_index)
        self._sync_dir()

    def _close_file(self) -> None:
        assert self._file is not None
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def _sync_dir(self) -> None:
        if self._fsync:
            fsync_dir(self._dir)

    # ----- the PySyncObj Journal interface --------------------------------------------------------------------
    def add(self, command: bytes, idx: int, term: int) -> None:
        if self._file_size >= self._segment_bytes:
            self.sync()
            self._open_segment(idx)
        assert self._file is not None
        record = encode_record(command, idx, term)
        self._entries.append((command, idx, term))
        self._where.append((self._segments[-1], self._file_size))
        self._file.write(record)
        self._file_size += len(record)
        self._bytes += len(command)
        self._dirty = True

    def clear(self) -> None:
        """Drop every entry and segment (used when a snapshot from the leader replaces the whole log)."""
        self.reset([])

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802 (PySyncObj's name)
        """Delete entries at list positions >= entryFrom (a conflicting tail, Raft §5.3)."""
        if entryFrom >= len(self._entries):
            return
        where = self._where[entryFrom]
        if where is None:
            raise CorruptLog("refusing to truncate entries that came from the snapshot")
        segment, offset = where
        self.sync()
        self._close_file()
        for first in [s for s in self._segments if s > segment]:
            self._segment_path(first).unlink(missing_ok=True)
        self._segments = [s for s in self._segments if s <= segment]
        with open(self._segment_path(segment), "r+b") as f:
            f.truncate(offset)
            if self._fsync:
                os.fsync(f.fileno())
        self._sync_dir()
        for command, _, _ in self._entries[entryFrom:]:
            self._bytes -= len(command)
        del self._entries[entryFrom:]
        del self._where[entryFrom:]
        self._reopen_last_segment()

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802 (PySyncObj's name)
        """Forget entries before list position entryTo. Only call once a durable snapshot covers them."""
        if entryTo <= 0:
            return
        for command, _, _ in self._entries[:entryTo]:
            self._bytes -= len(command)
        del self._entries[:entryTo]
        del self._where[:entryTo]
        self._delete_unneeded_segments()

    def _delete_unneeded_segments(self) -> None:
        """Delete segment files whose every record precedes the oldest entry still kept."""
        located = [w for w in self._where if w is not None]
        keep_from = located[0][0] if located else self._segments[-1]
        doomed = [s for s in self._segments if s < keep_from]
        for first in doomed:
            self._segment_path(first).unlink(missing_ok=True)
        if doomed:
            self._segments = [s for s in self._segments if s >= keep_from]
            self._sync_dir()

    def __getitem__(self, item):  # int or slice, like a list
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def _destroy(self) -> None:
        self.close()

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802,N803
        if self._meta.get("commit_index") != raftCommitIndex:
            self._meta["commit_index"] = raftCommitIndex
            self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        return int(self._meta.get("commit_index", 1))

    def setCurrentTerm(self, term: int, votedForNodeId) -> None:  # noqa: N802,N803
        """Raft requires term and vote on disk before any message that reflects them is sent."""
        self._meta["term"] = term
        self._meta["voted_for"] = votedForNodeId
        self._write_meta()

    def getCurrentTerm(self) -> int:  # noqa: N802
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self):  # noqa: N802
        return self._meta.get("voted_for")

    def onOneSecondTimer(self) -> None:  # noqa: N802
        if self._meta_dirty:
            self._write_meta()

    # ----- ours ----------------------------------------------------------------------------------------------
    def _write_meta(self) -> None:
        atomic_write(self._meta_path, orjson.dumps(self._meta), fsync=self._fsync)
        self._meta_dirty = False

    @property
    def dirty(self) -> bool:
        return self._dirty

    @property
    def payload_bytes(self) -> int:
        """Total size of the commands held (the compaction trigger)."""
        return self._bytes

    def sync(self) -> None:
        """Make every appended record durable (one fdatasync for everything added since the last call)."""
        if not self._dirty or self._file is None:
            return
        self._file.flush()
        if self._fsync:
            os.fdatasync(self._file.fileno())
        self._dirty = False

    def reset(self, entries: Iterable[Entry]) -> None:
        """Replace the whole log with `entries` (after installing a snapshot from the leader), durably."""
        if self._file is not None:
            self._close_file()
        for first in self._segments:
            self._segment_path(first).unlink(missing_ok=True)
        self._segments = []
        self._entries = []
        self._where = []
        self._bytes = 0
        entries = list(entries)
        self._open_segment(entries[0][1] if entries else 1)
        for entry in entries:
            self.add(*entry)
        self.sync()

    def roll_segment(self) -> None:
        """Start a new segment so that a later trim can delete what is written now."""
        if self._file_size == 0 or not self._entries:
            return
        self.sync()
        self._open_segment(self._entries[-1][1] + 1)

    def segment_files(self) -> list[Path]:
        return [self._segment_path(first) for first in self._segments]

    def close(self) -> None:
        if self._file is not None:
            self._close_file()
        if self._meta_dirty:
            self._write_meta()
