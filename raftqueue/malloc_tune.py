"""glibc malloc settings for a node.

glibc serves allocations of 128 KB and more with mmap and hands them back to the OS when they are freed, but
every such free *raises* that threshold (up to 32 MB), so later big buffers (Raft frames, journal entries,
batch bodies of hundreds of KB) come from the heap instead and leave holes that the heap never returns.
Fixing the threshold keeps big buffers on mmap, returned when freed. Measured with scenarios 5+6 of
`scripts/bench` (1M jobs live after 1.35M went through, 2026-11-27): the largest node's RSS was 1,580 and
1,619 MB in two runs with it, 1,662-1,676 MB in three without; the run-to-run noise is ~50 MB.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD_BYTES = 128 * 1024


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """True when glibc took the setting; False where there is no glibc (musl, macOS): nothing to do there."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1
