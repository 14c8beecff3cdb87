"""Typed outcomes of a proposal that did not simply succeed. The HTTP layer maps them to status codes."""
from __future__ import annotations


class ProposalError(Exception):
    """Base class. `committed` says what is known: False = certainly not applied, None = unknown."""

    code = "proposal_failed"
    committed: bool | None = False


class NotLeader(ProposalError):
    """This node is not the leader; `leader` is the leader's Raft address if known. Safe to retry there."""

    code = "not_leader"

    def __init__(self, leader: str | None, message: str = "not the leader") -> None:
        super().__init__(message)
        self.leader = leader


class NoLeader(ProposalError):
    """No leader is known (an election is running). Safe to retry."""

    code = "no_leader"


class NotCommitted(ProposalError):
    """The entry was overwritten by a newer leader or refused: certainly not applied. Safe to retry."""

    code = "not_committed"


class Overloaded(ProposalError):
    """Too many proposals are waiting. Safe to retry later."""

    code = "overloaded"


class CommitUnknown(ProposalError):
    """The outcome is unknown: the entry may still commit. Retry only with an idempotency key."""

    code = "commit_timeout"
    committed = None


class ReplicaClosed(ProposalError):
    """The node is shutting down."""

    code = "shutting_down"
    committed = None
