"""The node fixes glibc's mmap threshold (see raftqueue/malloc_tune.py) where glibc is the C library."""
from __future__ import annotations

import platform

import pytest

from raftqueue.malloc_tune import fix_mmap_threshold


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="only glibc has mallopt")
def test_glibc_takes_the_fixed_mmap_threshold():
    assert fix_mmap_threshold() is True
    assert fix_mmap_threshold(256 * 1024) is True  # and any later value
    assert fix_mmap_threshold(128 * 1024) is True
