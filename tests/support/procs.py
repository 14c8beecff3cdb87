"""Real processes for integration tests (the same NodeProcess the local cluster supervisor uses)."""
from __future__ import annotations

import sys
from pathlib import Path

from raftqueue.localcluster import NodeProcess, free_ports

__all__ = ["NodeProcess", "free_ports", "python_module_argv", "REPO"]

REPO = Path(__file__).resolve().parents[2]


def python_module_argv(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
