"""Pre-vote (D4) gate on a real RaftNode, ticked by hand: no election starts unless a pre-vote allowed it.

The node's peers are not running; we mark one as connected so that the library is willing to start an election,
and drive `_maybe_prevote` and `doTick` the way the tick loop does. Each test has a control showing the library
on its own would start the election we forbid, so the tests can fail.
"""
from __future__ import annotations

import time

import pytest
from pysyncobj.monotonic import monotonic as monotonic_time  # the library's clock, not time.monotonic

from raftqueue.raft.node import FOLLOWER, RaftNode
from tests.support.idle_node import close_idle_node, idle_node


@pytest.fixture
def node(tmp_path):
    raft = idle_node(tmp_path)
    yield raft
    close_idle_node(raft)


def _tick(raft: RaftNode) -> None:
    raft._gated_tick(0)


def _deadline_passes_between_check_and_tick(raft: RaftNode, gate: bool) -> None:
    raft._SyncObj__raftElectionDeadline = monotonic_time() + 0.02  # not yet due when the pre-vote looks
    held = raft._maybe_prevote() if gate else None
    time.sleep(0.05)  # ... but due when the library looks (a GIL switch can be this long)
    raft.doTick(0)
    raft._release_deadline(held)


def test_a_deadline_falling_between_the_prevote_check_and_the_library_starts_no_election(node):
    term = node._SyncObj__raftCurrentTerm
    _deadline_passes_between_check_and_tick(node, gate=True)
    assert (node._SyncObj__raftState, node._SyncObj__raftCurrentTerm) == (FOLLOWER, term)
    assert node._SyncObj__raftElectionDeadline < monotonic_time()  # given back: the next tick pre-votes
    sent_round = node._prevote_round
    _tick(node)
    assert node._prevote_round == sent_round + 1 and node._SyncObj__raftCurrentTerm == term


def test_control_without_the_hold_the_library_starts_that_election(node):
    term = node._SyncObj__raftCurrentTerm
    _deadline_passes_between_check_and_tick(node, gate=False)
    assert node._SyncObj__raftCurrentTerm == term + 1


def test_a_permission_left_unused_expires(node):
    """A pre-vote quorum whose election never ran (a leader's append came first) must not allow a later one."""
    term = node._SyncObj__raftCurrentTerm
    node._prevote_ok_term, node._prevote_ok_until = term, monotonic_time() - 0.01
    node._SyncObj__raftElectionDeadline = 0.0
    _tick(node)
    assert node._SyncObj__raftCurrentTerm == term and node._prevote_ok_term is None


def test_control_a_live_permission_lets_the_library_elect(node):
    term = node._SyncObj__raftCurrentTerm
    node._prevote_ok_term, node._prevote_ok_until = term, monotonic_time() + 5
    node._SyncObj__raftElectionDeadline = 0.0
    _tick(node)
    assert node._SyncObj__raftCurrentTerm == term + 1
