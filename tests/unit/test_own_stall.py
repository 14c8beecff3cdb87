"""A node's own stall is not counted against its peers (RaftNode._discount_own_stall), on a real RaftNode ticked
by hand. Each case has a control: the same silence without the discount costs the leader its role, or starts
a pre-vote."""
from __future__ import annotations

from pysyncobj.monotonic import monotonic as monotonic_time  # the library's clock, not time.monotonic

from raftqueue.raft.node import FOLLOWER, LEADER, RaftNode

STALL_S = 2.0  # longer than the leader's step-down (1.2 s) and the follower's grace (1 s)


def _leader_after_a_stall(raft: RaftNode) -> None:
    """A leader whose followers last answered just before a stall of STALL_S: nothing has arrived since."""
    raft._SyncObj__onBecomeLeader()
    before = monotonic_time() - STALL_S - 0.05
    for peer in raft._SyncObj__lastResponseTime:
        raft._SyncObj__lastResponseTime[peer] = before


def test_a_leader_does_not_step_down_for_silence_it_could_not_hear(node):
    _leader_after_a_stall(node)
    node._discount_own_stall(STALL_S)
    node._gated_tick(0)
    assert node._SyncObj__raftState == LEADER


def test_the_tick_finds_the_stall_itself(node):
    """The gap between two ticks is the stall: whatever held the thread (an fsync before the tick, the
    collector, the host), the next tick discounts it before the library judges anyone."""
    node._gated_tick(0)
    _leader_after_a_stall(node)
    node._last_tick_at -= STALL_S  # as if the thread had been held that long since its previous tick
    node._gated_tick(0)
    assert node._SyncObj__raftState == LEADER


def test_control_without_the_discount_the_leader_steps_down_at_once(node):
    _leader_after_a_stall(node)
    node._gated_tick(0)
    assert node._SyncObj__raftState == FOLLOWER


def _follower_after_a_stall(raft: RaftNode) -> None:
    """A follower that heard its (still connected) leader just before a stall of STALL_S."""
    leader = next(iter(raft._SyncObj__otherNodes))
    raft._SyncObj__raftLeader = leader
    raft._SyncObj__connectedNodes.add(leader)
    heard = monotonic_time() - STALL_S - 0.05
    raft._last_leader_contact = heard
    raft._SyncObj__raftElectionDeadline = heard + raft._settings.election_min_s


def test_a_follower_does_not_ask_for_an_election_over_its_own_stall(node):
    _follower_after_a_stall(node)
    node._discount_own_stall(STALL_S)
    for _ in range(3):
        node._gated_tick(0)
    assert node._prevote_round == 0


def test_control_without_the_discount_the_follower_asks_after_one_look(node):
    _follower_after_a_stall(node)
    node._gated_tick(0)  # the first tick past the deadline only looks
    node._gated_tick(0)
    assert node._prevote_round == 1


def test_a_node_slow_all_the_time_is_discounted_at_most_once_per_window(node):
    _follower_after_a_stall(node)
    node._discount_own_stall(STALL_S)
    contact = node._last_leader_contact
    node._discount_own_stall(STALL_S)  # a second stall right after: its peers are timed again
    assert node._last_leader_contact == contact
