"""Snapshot transfer to lagging followers, in place of PySyncObj's `Serializer`.

PySyncObj's leader sends a follower its snapshot when the follower needs entries the leader has trimmed; it
asks `self.__serializer.getTransmissionData(node)` for chunks `(data, is_first, is_last)`. We replace that
object with this one so the chunks are our own snapshot file (not a pickle of the SyncObj), read from an open
file descriptor so a compaction that replaces the file mid-transfer cannot mix two snapshots. On the follower,
`receive()` writes the chunks to a temp file and fsyncs it; the node then verifies and installs it.

The library's own compaction entry points (`serialize`, `checkSerializing`, `deserialize`) are inert here: the
replica does its own compaction (see `node.RaftNode._SyncObj__tryLogCompaction`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO, Callable

from pysyncobj.config import SERIALIZER_STATE

from raftqueue.raft.files import write_paced


class SnapshotTransfer:
    def __init__(self, snapshot_path: Callable[[], Path | None], incoming_path: Path,
                 chunk_bytes: int = 1 << 20, fsync: bool = True) -> None:
        self._snapshot_path = snapshot_path  # the newest snapshot file, asked at the start of each transfer
        self._incoming_path = incoming_path
        self._chunk_bytes = chunk_bytes
        self._fsync = fsync
        self._outgoing: dict[object, BinaryIO] = {}
        self._incoming: BinaryIO | None = None

    # ----- leader side (called by PySyncObj's __sendAppendEntries) -------------------------------------------
    def getTransmissionData(self, transmissionID):  # noqa: N802,N803 (library's names)
        f = self._outgoing.get(transmissionID)
        is_first = f is None
        if f is None:
            path = self._snapshot_path()
            if path is None:
                return None
            try:
                f = open(path, "rb")
            except FileNotFoundError:
                return None
            self._outgoing[transmissionID] = f
        try:
            data = f.read(self._chunk_bytes)
        except OSError:
            self.cancelTransmisstion(transmissionID)
            return None
        is_last = len(data) == 0
        if is_last:
            self.cancelTransmisstion(transmissionID)
        return data, is_first, is_last

    def bytes_sent(self, transmissionID) -> int:
        """How far the transfer to this node has read its snapshot file (0 when none runs)."""
        f = self._outgoing.get(transmissionID)
        try:
            return f.tell() if f is not None else 0
        except (OSError, ValueError):
            return 0

    def cancelTransmisstion(self, transmissionID) -> None:  # noqa: N802,N803 (sic, the library's spelling)
        f = self._outgoing.pop(transmissionID, None)
        if f is not None:
            f.close()

    # ----- follower side ---------------------------------------------------------------------------------------
    def receive(self, chunk) -> bool:
        """Take one `(data, is_first, is_last)` chunk; True once a complete file is on disk at incoming_path."""
        if not isinstance(chunk, tuple) or len(chunk) != 3:
            return False
        data, is_first, is_last = chunk
        if not isinstance(data, bytes):
            return False
        if is_first:
            self._close_incoming()
            self._incoming = open(self._incoming_path, "wb")
        elif self._incoming is None:
            return False  # a transfer we did not see start: wait for the leader to restart it
        write_paced(self._incoming, data, self._fsync)  # the final fsync then has little left to flush
        if not is_last:
            return False
        self._incoming.flush()
        if self._fsync:
            os.fsync(self._incoming.fileno())
        self._incoming.close()
        self._incoming = None
        return True

    def _close_incoming(self) -> None:
        if self._incoming is not None:
            self._incoming.close()
            self._incoming = None

    # ----- inert library compaction hooks ---------------------------------------------------------------------
    def checkSerializing(self):  # noqa: N802
        return SERIALIZER_STATE.NOT_SERIALIZING, None

    def serialize(self, data, id) -> None:  # noqa: A002
        raise RuntimeError("PySyncObj's own compaction is disabled in raftqueue")

    def deserialize(self):
        raise RuntimeError("PySyncObj's own dump loading is disabled in raftqueue")

    def setTransmissionData(self, data) -> bool:  # noqa: N802
        return self.receive(data)

    def close(self) -> None:
        for key in list(self._outgoing):
            self.cancelTransmisstion(key)
        self._close_incoming()
