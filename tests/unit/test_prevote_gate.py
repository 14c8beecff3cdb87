"""Pre-vote (D4) gate on a real RaftNode, ticked by hand: no election starts unless a pre-vote allowed it.

The node's peers are not running; we mark one as connected so that the library is willing to start an election,
and drive `_maybe_prevote` and `doTick` the way the tick loop does. Each test has a control showing the library
on its own would start the election we forbid, so the tests can fail.
"""
from __future__ import annotations

import time

from pysyncobj.monotonic import monotonic as monotonic_time  # the library's clock, not time.monotonic

from raftqueue.raft.node import FOLLOWER, RaftNode


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
    assert node._SyncObj__raftElectionDeadline < monotonic_time()  # given back: the next ticks pre-vote
    sent_round = node._prevote_round
    _tick(node)  # the first tick to find the deadline passed only looks (it reads what has arrived) ...
    _tick(node)  # ... the next one asks
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


def _leader_contact(raft: RaftNode, connected: bool, ago_s: float) -> None:
    """As if `ago_s` ago an append came from a leader whose connection is now open or closed."""
    leader = next(iter(raft._SyncObj__otherNodes))
    raft._SyncObj__raftLeader = leader
    raft._last_leader_contact = monotonic_time() - ago_s
    if connected:
        raft._SyncObj__connectedNodes.add(leader)
    else:
        raft._SyncObj__connectedNodes.discard(leader)
        raft._SyncObj__connectedNodes.add(next(n for n in raft._SyncObj__otherNodes if n is not leader))


def test_the_first_tick_past_the_deadline_only_looks_and_a_heartbeat_read_meanwhile_cancels_it(node):
    node._SyncObj__raftElectionDeadline = 0.0
    _tick(node)
    assert node._prevote_round == 0 and node._deadline_seen
    node._SyncObj__raftElectionDeadline = monotonic_time() + 0.3  # what a heartbeat read by that tick does
    _tick(node)
    assert not node._deadline_seen
    node._SyncObj__raftElectionDeadline = 0.0  # the next silence is looked at afresh
    _tick(node)
    assert node._prevote_round == 0


def test_a_leader_whose_connection_is_open_gets_the_stall_grace(node):
    _leader_contact(node, connected=True, ago_s=0.7)  # silent for longer than any election timeout
    node._SyncObj__raftElectionDeadline = 0.0
    for _ in range(3):
        _tick(node)
    assert node._prevote_round == 0
    node._last_leader_contact = monotonic_time() - node._settings.stall_grace_s - 0.01  # the grace is over
    node._SyncObj__raftElectionDeadline = 0.0
    _tick(node)
    assert node._prevote_round == 1


def test_control_a_leader_whose_connection_closed_is_not_waited_for(node):
    _leader_contact(node, connected=False, ago_s=0.7)
    node._SyncObj__raftElectionDeadline = 0.0
    _tick(node)
    _tick(node)
    assert node._prevote_round == 1
