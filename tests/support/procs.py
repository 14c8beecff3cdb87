"""Real processes for integration tests (the same NodeProcess the local cluster supervisor uses)."""
from __future__ import annotations

import socket
import sys
from pathlib import Path

from raftqueue.localcluster import NodeProcess

__all__ = ["NodeProcess", "free_ports", "python_module_argv", "REPO"]

REPO = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now on 127.0.0.1 (held open together so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def python_module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
