"""Pre-vote (D4) gate on a real RaftNode, ticked by hand: no election starts unless a pre-vote allowed it.

The node's peers are not running; we mark one as connected so that the library is willing to start an election,
and drive `_maybe_prevote` and `doTick` the way the tick loop does. Each test has a control showing the library
on its own would start the election we forbid, so the tests can fail.
"""
from __future__ import annotations

import socket
import time

import pytest
from pysyncobj.monotonic import monotonic as monotonic_time  # the library's clock, not time.monotonic

from raftqueue.raft.node import FOLLOWER, RaftNode, RaftSettings


class _NoState:
    def apply_entry(self, blob: bytes, index: int) -> list:
        return []

    def snapshot_body(self) -> bytes:
        return b""

    def restore_body(self, body: bytes, index: int) -> None:
        pass

    def housekeeping(self, is_leader: bool) -> list[bytes]:
        return []


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture
def node(tmp_path):
    ports = _free_ports(3)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    raft = RaftNode(RaftSettings(self_addr=addrs[0], peer_addrs=addrs[1:], data_dir=tmp_path), _NoState())
    raft.doTick(0)  # binds the transport
    peer = next(iter(raft._SyncObj__otherNodes))
    raft._SyncObj__connectedNodes.add(peer)  # the library elects only when connected to someone
    yield raft
    raft._SyncObj__connectedNodes.discard(peer)
    raft._doDestroy()


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
