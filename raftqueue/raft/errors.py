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


class ChangeRefused(ProposalError):
    """A membership change the leader will not start now (another one is in flight, or its term has no
    committed entry yet). Certainly not applied; retry in a moment."""

    code = "change_refused"


class CatchUpEnded(ChangeRefused):
    """A node to add was not added: its catch-up was cancelled, or made no progress for too long. Not applied;
    asking again at once would only start the same catch-up over."""

    code = "catch_up_ended"


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


# The exit status of a node that stopped because it cannot apply a committed entry (EX_CONFIG: the build does
# not match the cluster). Supervisors should not restart it as it is: it would stop again at the same entry.
EXIT_CANNOT_APPLY = 78


class CannotApply(Exception):
    """A committed entry holds a command this build does not know (written by a newer build).

    Skipping it, or rejecting it as malformed, would make this replica's state differ from the replicas that
    apply it. The node stops instead (fail-stop) and applies the entry once it runs the newer build."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"entry {index}: {reason}")
        self.index = index
        self.reason = reason
