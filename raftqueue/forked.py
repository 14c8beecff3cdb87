"""Forked children that read a frozen copy of the state (snapshot writer, digest): fork gives a consistent view
of a large state in milliseconds, and the work runs outside the node's threads and store lock."""
from __future__ import annotations

import ctypes
import os
import signal
import stat

CHILD_NICE = 10


def prepare_child(parent_pid: int) -> None:
    """First thing in a forked child: die with the node, free its ports, and yield the CPU to it. The work
    takes seconds of CPU for a big state; the node's threads serve requests and keep heartbeats going."""
    _die_with_parent(parent_pid)
    _close_inherited_sockets()
    os.nice(CHILD_NICE)


def _die_with_parent(parent_pid: int) -> None:
    """Get SIGKILL if the node dies, so an orphan never outlives it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    if os.getppid() != parent_pid:
        os._exit(1)


def _close_inherited_sockets() -> None:
    """A child must not keep the node's listening ports open after the node dies."""
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except (ValueError, OSError):
            continue
