"""The deterministic job store: the Raft state machine. Pure Python: no clock, randomness, I/O or threads.

The command contract is in `commands.py`; `JobStore` in `store.py`.
"""
from raftqueue.store.commands import COMMAND_VERSION
from raftqueue.store.model import ACKED, CANCELLED, DEAD, READY, RETRY, RUNNING, SCHEDULED, STATES, TERMINAL
from raftqueue.store.store import JobStore

ERROR_CODES = ("validation_error", "not_found", "conflict")

__all__ = ["JobStore", "COMMAND_VERSION", "STATES", "TERMINAL", "SCHEDULED", "READY", "RUNNING", "RETRY", "ACKED",
           "DEAD", "CANCELLED", "ERROR_CODES"]
