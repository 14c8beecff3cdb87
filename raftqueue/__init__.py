"""raftqueue: a replicated job queue (PySyncObj Raft + aiohttp)."""

__version__ = "0.1.0"

_LAZY = {"Client": "raftqueue.client", "AsyncClient": "raftqueue.client", "Worker": "raftqueue.worker"}


def __getattr__(name: str):
    """`raftqueue.Client`, `raftqueue.AsyncClient`, `raftqueue.Worker`, imported on first use (the store and
    the node do not need the SDK)."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'raftqueue' has no attribute {name!r}")
