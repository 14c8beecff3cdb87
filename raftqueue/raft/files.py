"""Crash-consistent file writes: temp file, fsync, rename, fsync the directory; big files flushed in steps."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import BinaryIO


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or unlink inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike[str], data: bytes, fsync: bool = True) -> None:
    """Replace `path` with `data` so that a crash leaves either the old or the new file, never a mix."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fsync_dir(path.parent)


# With fsync on, a snapshot the node writes is written and flushed this much at a time (one received from the
# leader is flushed chunk by chunk, 1 MB each, as it arrives). Written in one go, hundreds of MB sat dirty in
# the page cache, and each Raft log fdatasync on the same file system then waited for their flush (ext4
# commits them together): log syncs of 0.6 s during scenario 6. Flushed in steps, a log sync waits for one
# step at most.
FLUSH_STEP_BYTES = 4 << 20


def write_paced(f: BinaryIO, data: bytes, fsync: bool, step: int = FLUSH_STEP_BYTES,
                bytes_per_s: float | None = None) -> None:
    """Write `data` to `f`, and with `fsync`, fdatasync after every `step` bytes; no faster than `bytes_per_s`.

    The rate limit is for the snapshot child, which has time: three nodes writing their snapshots at full
    speed (200-660 MB/s together on the 2-core test machine) made every small log fdatasync take 2.6-7 ms at
    the median instead of 0.2 ms; at 64 MB/s each it stayed at 0.2 ms."""
    view = memoryview(data)
    started = time.monotonic()
    for start in range(0, len(view), step):
        f.write(view[start:start + step])
        if fsync:
            f.flush()
            os.fdatasync(f.fileno())
        if bytes_per_s:
            ahead = started + (start + step) / bytes_per_s - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
