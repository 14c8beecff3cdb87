"""raftqueue: a replicated job queue (PySyncObj Raft + aiohttp)."""

__version__ = "0.1.0"
