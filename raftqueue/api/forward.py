"""How forwarding a request to the leader can fail (api/batch_forward.py sends every forward).

Whether a failed forward may be retried depends on how it failed: if no connection could be made, nothing
reached the leader; if the connection broke after the request was sent, the write may have been applied, so
the client gets 504 commit_timeout and retries with its idempotency key.
"""
from __future__ import annotations


class ForwardNotSent(Exception):
    """The leader could not be reached at all: the request was not delivered; retrying is safe."""


class ForwardBroken(Exception):
    """The connection failed after the request may have been delivered: outcome unknown."""


def error_reason(error: BaseException) -> str:
    """The `reason` label of raftqueue_forward_errors_total."""
    return "not_sent" if isinstance(error, ForwardNotSent) else "broken"
