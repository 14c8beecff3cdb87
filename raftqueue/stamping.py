"""What the leader writes into a command before it is proposed: its time, job ids and lease-token entropy.

The store is deterministic, so everything that is not a pure function of the log (the clock, new ids, the
random part of fencing tokens) must travel inside the command, stamped once on the leader.
"""
from __future__ import annotations

import secrets

from raftqueue.ids import IdGenerator
from raftqueue.store.commands import COMMAND_VERSION


def stamp(command: dict, now_ms: int, ids: IdGenerator) -> dict:
    command.setdefault("v", COMMAND_VERSION)
    command["now"] = now_ms
    kind = command.get("kind")
    if kind == "submit":
        if not command.get("job_id"):
            command["job_id"] = ids.new(now_ms)
    elif kind == "submit_batch":
        for job in command.get("jobs", ()):
            if not job.get("job_id"):
                job["job_id"] = ids.new(now_ms)
    elif kind == "lease":
        # Hex, not URL-safe base64: a token that starts with "-" reads as an option on a command line
        # (`raftqueue ack <job_id> <lease_token>` failed for about 1 lease in 64). Same 96 bits.
        command["token_base"] = secrets.token_hex(12)
    return command
