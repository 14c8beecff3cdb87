"""Run-time membership (D9) without a running cluster: the entry format, the member list a log yields, and a
real RaftNode (never started, ticked by hand) appending, undoing and reloading changes."""
from __future__ import annotations

import time

import pytest
from pysyncobj import SyncObj

from raftqueue.api.errors import ApiError
from raftqueue.api.membership import parse_member
from raftqueue.raft import membership
from raftqueue.raft.errors import CannotApply
from raftqueue.raft.node import Proposal, RaftNode, RaftSettings
from raftqueue.raft.snapshot_file import CorruptSnapshot, SnapshotHeader
from tests.support.idle_node import _NoState, _free_ports

N4 = membership.spec("n4", "127.0.0.1:9004", "http://127.0.0.1:8004")


def _entry(op: str, member: dict) -> bytes:
    return bytes((membership.MEMBERSHIP,)) + membership.encode_change(op, member)


def test_an_entry_round_trips_and_other_entries_are_not_changes():
    assert membership.decode_change(_entry(membership.ADD, N4)) == (membership.ADD, N4)
    assert membership.decode_change(b"\x00" + b"[]") is None
    with pytest.raises(membership.BadChange):
        membership.decode_change(b"\x02{not json")
    with pytest.raises(membership.BadChange):
        membership.decode_change(b'\x02{"op": "swap", "member": {"id": "a", "raft_addr": "b", "http_addr": "c"}}')


def test_replay_takes_changes_in_log_order_and_reverse_undoes_one():
    base = membership.by_addr([membership.spec("n1", "h:1", "http://h:81")])
    log = [_entry(membership.ADD, N4), b"\x00x", _entry(membership.REMOVE, N4), _entry(membership.ADD, N4)]
    assert set(membership.replay(base, log)) == {"h:1", N4["raft_addr"]}
    assert set(membership.replay(base, log[:3])) == {"h:1"}
    added = membership.changed(base, membership.ADD, N4)
    assert membership.changed(added, membership.ADD, N4, reverse=True) == base
    assert base == membership.by_addr([membership.spec("n1", "h:1", "http://h:81")])  # input untouched


def test_a_snapshot_header_keeps_the_member_list_and_reads_old_headers():
    header = SnapshotHeader(index=5, term=2, prev=(b"a", 4, 2), last=(b"b", 5, 2), members=["x:1"],
                            member_specs=[N4])
    assert SnapshotHeader.from_json(header.to_json()).member_specs == [N4]
    old = SnapshotHeader(index=5, term=2, prev=(b"a", 4, 2), last=(b"b", 5, 2), members=["x:1"])
    assert b"member_specs" not in old.to_json() and SnapshotHeader.from_json(old.to_json()).member_specs is None
    with pytest.raises(CorruptSnapshot):
        SnapshotHeader.from_json(header.to_json().replace(b'"http_addr"', b'"other"'))


@pytest.mark.parametrize("body, field", [
    (b'{"id": "n4", "raft_addr": "127.0.0.1:9004"}', "http_addr"),
    (b'{"id": "n 4", "raft_addr": "127.0.0.1:9004", "http_addr": "http://127.0.0.1:8004"}', "id"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1", "http_addr": "http://127.0.0.1:8004"}', "raft_addr"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1:0", "http_addr": "http://127.0.0.1:8004"}', "raft_addr"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1:9004", "http_addr": "ftp://127.0.0.1:8004"}', "http_addr"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1:9004", "http_addr": "http://127.0.0.1"}', "http_addr"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1:9004", "http_addr": "http://127.0.0.1:8004/x"}', "http_addr"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1:9004", "http_addr": "http://127.0.0.1:8004#x"}', "http_addr"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1:9004", "http_addr": "http://127.0.0.1:8004/#x"}', "http_addr"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1:9004", "http_addr": "http://u:p@127.0.0.1:8004"}', "http_addr"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1:9004", "http_addr": "http://127.0.0.1:8004?"}', "http_addr"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1:9004", "http_addr": "http://127.0.0.1:8004;x"}', "http_addr"),
    (b'{"id": "n4", "raft_addr": "127.0.0.1:9004", "http_addr": "http://127.0.0.1:8004", "role": "x"}', "role"),
    (b'{"id": 4, "raft_addr": "127.0.0.1:9004", "http_addr": "http://127.0.0.1:8004"}', "id"),
    (b'{"id": "n4", "raft_addr": "10.0.0.4:9004", "http_addr": "http://10.0.0.4:8004"}', "raft_addr"),
])
def test_a_bad_member_is_a_400_naming_the_field(body, field):
    with pytest.raises(ApiError) as caught:
        parse_member(body, secret=False)
    assert caught.value.status == 400 and caught.value.message.startswith(field)


def test_a_good_member_parses_and_a_secret_allows_other_hosts():
    member = parse_member(b'{"id": "n4", "raft_addr": "10.0.0.4:9004", "http_addr": "https://q4.example:8004/"}',
                          secret=True)
    assert (member.id, member.raft_addr, member.http_addr) == ("n4", "10.0.0.4:9004", "https://q4.example:8004")


# ----- a real RaftNode, ticked by hand ----------------------------------------------------------------------------
@pytest.fixture
def cluster_addrs():
    return [f"127.0.0.1:{p}" for p in _free_ports(4)]


def _node(data_dir, addrs: list[str], members: list[str] | None = None, **settings) -> RaftNode:
    """Member addrs[0] of a cluster whose peers are not running, started with `members` as its flags."""
    members = members or addrs[:3]
    specs = [membership.spec(f"n{addrs.index(a) + 1}", a, f"http://h{addrs.index(a) + 1}:80") for a in members]
    raft = RaftNode(RaftSettings(self_addr=addrs[0], peer_addrs=[a for a in members if a != addrs[0]],
                                 data_dir=data_dir, members=specs, **settings), _NoState())
    raft.doTick(0)
    return raft


def _peers(raft: RaftNode) -> set[str]:
    return {n.address for n in raft._SyncObj__otherNodes}


def test_a_follower_takes_a_change_when_appended_undoes_it_when_truncated_and_reloads_it(tmp_path, cluster_addrs):
    a = cluster_addrs
    n4 = membership.spec("n4", a[3], "http://h4:80")
    raft = _node(tmp_path, a)
    try:
        leader = next(iter(raft._SyncObj__otherNodes))
        raft._append(leader, 1, 0, [(_entry(membership.ADD, n4), 2, 1)], leader_commit=1)
        assert _peers(raft) == {a[1], a[2], a[3]}
        assert [m["id"] for m in raft.member_list] == ["n1", "n2", "n3", "n4"]
        assert [m["id"] for m in raft.applied_member_list] == ["n1", "n2", "n3"]  # not committed yet
        # a new leader's entry at index 2 replaces the uncommitted change: it is undone
        raft._append(leader, 1, 0, [(b"\x01", 2, 2)], leader_commit=1)
        assert _peers(raft) == {a[1], a[2]} and [m["id"] for m in raft.member_list] == ["n1", "n2", "n3"]
        raft._append(leader, 2, 2, [(_entry(membership.ADD, n4), 3, 2), (_entry(membership.REMOVE, {
            "id": "n2", "raft_addr": a[1], "http_addr": "http://h2:80"}), 4, 2)], leader_commit=2)
        assert _peers(raft) == {a[2], a[3]}
        raft._journal.sync()
    finally:
        raft._doDestroy()
    # restarted with its original flags (n1-n3), it takes the list from its log, and says so
    again = _node(tmp_path, a)
    try:
        assert _peers(again) == {a[2], a[3]}
        assert [m["id"] for m in again.member_list] == ["n1", "n3", "n4"]
    finally:
        again._doDestroy()
    # restoring onto other addresses: --members-from-flags makes the flags win
    forced = _node(tmp_path, a, members_from_flags=True)
    try:
        assert _peers(forced) == {a[1], a[2]}
        assert [m["id"] for m in forced.member_list] == ["n1", "n2", "n3"]
        assert [m["id"] for m in forced.applied_member_list] == ["n1", "n2", "n3"]  # and the next snapshot
    finally:
        forced._doDestroy()


def test_control_without_the_log_the_flags_decide(tmp_path, cluster_addrs):
    raft = _node(tmp_path, cluster_addrs)
    try:
        assert _peers(raft) == set(cluster_addrs[1:3])
    finally:
        raft._doDestroy()


def _lone_leader(data_dir, addrs: list[str]) -> RaftNode:
    """addrs[0] as a cluster of one: it elects itself at once (an election timeout is 0.3-0.6 s)."""
    raft = _node(data_dir, addrs, members=[addrs[0]])
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and not raft.leader_ready:
        raft.doTick(0.01)
        raft._journal.sync()
    assert raft.leader_ready
    return raft


def _joiner(data_dir, addrs: list[str], i: int) -> RaftNode:
    """addrs[i], started empty with the leader addrs[0] and itself as its flags, as a node to add is."""
    specs = [membership.spec(f"n{j + 1}", addrs[j], f"http://h{j + 1}:80") for j in (0, i)]
    raft = RaftNode(RaftSettings(self_addr=addrs[i], peer_addrs=[addrs[0]], data_dir=data_dir, members=specs),
                    _NoState())
    raft.doTick(0)
    return raft


def _tick(*nodes: RaftNode) -> None:
    """One pass of each node's tick loop (RaftNode._run without its thread)."""
    for raft in nodes:
        raft._journal.sync()
        raft.doTick(0.002)
        raft._send_deferred_acks()
        raft._journal.sync()


def _spec(addrs: list[str], i: int) -> dict:
    return membership.spec(f"n{i + 1}", addrs[i], f"http://h{i + 1}:80")


def test_a_leader_takes_one_change_at_a_time(tmp_path, cluster_addrs, monkeypatch):
    a = cluster_addrs
    raft = _lone_leader(tmp_path / "n1", a)
    n2 = _joiner(tmp_path / "n2", a, 1)
    try:
        outcomes: list = []
        for i in (1, 2):
            raft.change_members(membership.ADD, _spec(a, i), lambda index, error: outcomes.append((index, error)))
        raft._run_membership_ops()
        assert len(outcomes) == 1 and type(outcomes[0][1]).__name__ == "ChangeRefused"  # n2 is catching up
        # Once n2 has caught up, its change waits in the library's queue (the library's loop is time-bounded and
        # may append it ticks later): still, it is in flight. Held there by keeping that loop from running.
        library_append = SyncObj._checkCommandsToApply
        monkeypatch.setattr(SyncObj, "_checkCommandsToApply", lambda self: None)
        deadline = time.monotonic() + 5.0
        while raft._catch_up is not None and time.monotonic() < deadline:
            _tick(raft, n2)
        assert raft._catch_up is None and not outcomes[1:]
        raft.change_members(membership.ADD, _spec(a, 3), lambda index, error: outcomes.append((index, error)))
        raft._run_membership_ops()
        assert len(outcomes) == 2 and type(outcomes[1][1]).__name__ == "ChangeRefused"
        library_append(raft)  # the library appends the one change proposed
        assert [m["id"] for m in raft.member_list] == ["n1", "n2"]
        # while n2's entry is not applied (n2 is not ticked now: no majority), a further change is refused
        raft.change_members(membership.ADD, _spec(a, 3), lambda index, error: outcomes.append((index, error)))
        raft._run_membership_ops()
        assert type(outcomes[-1][1]).__name__ == "ChangeRefused"
        assert [m["id"] for m in raft.member_list] == ["n1", "n2"]
    finally:
        n2._doDestroy()
        raft._doDestroy()


def test_a_node_to_add_catches_up_without_a_vote_before_it_is_added(tmp_path, cluster_addrs):
    """Raft thesis §4.2.1: added at once, an empty node is a voter holding nothing until its snapshot and log
    arrive, and one more failure stops the writes. The leader replicates to it first, counting it nowhere."""
    a = cluster_addrs
    raft = _lone_leader(tmp_path / "n1", a)
    n2 = _joiner(tmp_path / "n2", a, 1)
    try:
        done: list = []
        for i in range(300):
            raft.submit(Proposal([b'{"kind":"noop"}'], lambda index, results, error: done.append(error)))
            _tick(raft)
        for _ in range(10):
            _tick(raft)
        assert len(done) == 300 and not any(done)
        asked_at = raft.last_log_index
        seen: list = []  # n2's last log index when the leader's member list takes n2 in
        raft.on_members_change = lambda members: seen.append((len(members), n2.last_log_index))
        outcome: list = []
        raft.change_members(membership.ADD, _spec(a, 1), lambda index, error: outcome.append((index, error)))
        deadline = time.monotonic() + 10.0
        while not outcome and time.monotonic() < deadline:
            # steady writes meanwhile: every round has more to send, and the node still catches up
            raft.submit(Proposal([b'{"kind":"noop"}'], lambda index, results, error: done.append(error)))
            _tick(raft, n2)
            if raft._catch_up is not None:  # meanwhile the leader counts n2 nowhere
                assert _peers(raft) == set() and raft.responsive_peers() == set()
        assert outcome and outcome[0][1] is None, outcome
        assert seen and seen[0][0] == 2 and seen[0][1] >= asked_at
        assert [m["id"] for m in raft.member_list] == ["n1", "n2"] and _peers(raft) == {a[1]}
        assert a[1] not in {n.address for n in raft._SyncObj__readonlyNodes}
        while n2.last_log_index < raft.last_log_index and time.monotonic() < deadline:
            _tick(raft, n2)
        assert n2.last_log_index == raft.last_log_index
    finally:
        n2._doDestroy()
        raft._doDestroy()


def test_a_node_that_does_not_catch_up_is_given_up_on_only_once_it_stops_progressing(tmp_path, cluster_addrs):
    a = cluster_addrs
    raft = _lone_leader(tmp_path / "n1", a)  # a[1] is not running
    try:
        last = raft.last_log_index
        outcome: list = []
        raft.change_members(membership.ADD, _spec(a, 1), lambda index, error: outcome.append((index, error)),
                            catch_up_idle_s=0.3)
        deadline = time.monotonic() + 5.0
        while not outcome and time.monotonic() < deadline:
            _tick(raft)
        assert outcome and type(outcome[0][1]).__name__ == "CatchUpEnded"
        assert "made no progress" in str(outcome[0][1])
        assert [m["id"] for m in raft.member_list] == ["n1"] and raft.last_log_index == last
        assert a[1] not in raft._SyncObj__transport._nodeAddrToNode  # its connection went with it
        assert not raft._SyncObj__readonlyNodes
        # nothing is left in flight: the next change is taken (and catches up in its turn)
        raft.change_members(membership.ADD, _spec(a, 1), lambda index, error: outcome.append((index, error)))
        raft._run_membership_ops()
        assert len(outcome) == 1 and raft._catch_up is not None
    finally:
        raft._doDestroy()


def test_a_leader_appends_no_membership_change_another_node_passes_on(tmp_path, cluster_addrs):
    """The library passes commands a deposed leader had queued to the new leader ('apply_command'); a change
    must not skip the new leader's checks that way."""
    a = cluster_addrs
    raft = _node(tmp_path, a, members=[a[0]])
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not raft.leader_ready:
            raft.doTick(0.01)
            raft._journal.sync()
        assert raft.leader_ready
        peer = raft._SyncObj__nodeClass(a[1])
        last = raft.last_log_index
        raft._SyncObj__onMessageReceived(peer, {"type": "apply_command", "request_id": 1,
                                                "command": _entry(membership.ADD, N4)})
        SyncObj._checkCommandsToApply(raft)
        assert raft.last_log_index == last and [m["id"] for m in raft.member_list] == ["n1"]
        # control: an ordinary command passed on the same way is appended
        raft._SyncObj__onMessageReceived(peer, {"type": "apply_command", "request_id": 2, "command": b"\x01"})
        SyncObj._checkCommandsToApply(raft)
        assert raft.last_log_index == last + 1
    finally:
        raft._doDestroy()


def test_an_uncommitted_removal_still_lets_the_removed_member_connect(tmp_path, cluster_addrs):
    """A leader that never had the removal can win under the committed list; it must get through to undo it."""
    a = cluster_addrs
    raft = _node(tmp_path, a)
    try:
        leader = raft._SyncObj__nodeClass(a[2])
        n2 = membership.spec("n2", a[1], "http://h2:80")
        raft._append(leader, 1, 0, [(_entry(membership.REMOVE, n2), 2, 1)], leader_commit=1)
        assert a[1] not in _peers(raft)  # no vote, no entries ...
        assert a[1] in raft._SyncObj__transport._nodeAddrToNode  # ... but its connection is accepted
        raft._append(leader, 2, 1, [(b"\x01", 3, 1)], leader_commit=3)
        raft._SyncObj__applyLogEntries()  # committed and applied: now it goes
        assert a[1] not in raft._SyncObj__transport._nodeAddrToNode
        assert [m["id"] for m in raft.applied_member_list] == ["n1", "n3"]
    finally:
        raft._doDestroy()


def test_a_membership_entry_this_build_cannot_read_stops_the_node_when_applied(tmp_path, cluster_addrs):
    raft = _node(tmp_path, cluster_addrs)
    try:
        with pytest.raises(CannotApply):
            raft._SyncObj__doApplyCommand(b'\x02{"op": "swap", "member": {}}')
    finally:
        raft._doDestroy()


def test_a_catch_up_goes_on_while_it_progresses_and_ends_when_it_stops(tmp_path, cluster_addrs, monkeypatch):
    a = cluster_addrs
    raft = _lone_leader(tmp_path / "n1", a)  # a[1] is not running: only the snapshot bytes below move
    try:
        sent = [0]
        monkeypatch.setattr(raft._transfer, "bytes_sent", lambda node: sent[0])
        outcome: list = []
        raft.change_members(membership.ADD, _spec(a, 1), lambda index, error: outcome.append((index, error)),
                            catch_up_idle_s=0.3)
        started = time.monotonic()
        while time.monotonic() - started < 1.0:  # three times the idle limit, progressing all along
            sent[0] += 1
            _tick(raft)
        assert not outcome and raft.catching_up()["snapshot_bytes_sent"] == sent[0]
        while not outcome and time.monotonic() - started < 5.0:  # no more progress
            _tick(raft)
        assert outcome and type(outcome[0][1]).__name__ == "CatchUpEnded"
        assert time.monotonic() - started >= 1.3
    finally:
        raft._doDestroy()


def test_a_leader_that_steps_down_ends_its_catch_up_and_leaves_nothing_behind(tmp_path, cluster_addrs):
    a = cluster_addrs
    raft = _lone_leader(tmp_path / "n1", a)
    try:
        outcome: list = []
        raft.change_members(membership.ADD, _spec(a, 1), lambda index, error: outcome.append((index, error)))
        raft._run_membership_ops()
        node = raft._catch_up.node
        assert node in raft._SyncObj__readonlyNodes and a[1] in raft._SyncObj__transport._nodeAddrToNode
        raft._SyncObj__setState(0)  # FOLLOWER: a newer term, say
        assert outcome and type(outcome[0][1]).__name__ == "NotLeader"
        assert raft._catch_up is None and not raft._SyncObj__readonlyNodes and not raft._change_queued
        assert node not in raft._SyncObj__raftNextIndex and node not in raft._SyncObj__raftMatchIndex
        assert a[1] not in raft._SyncObj__transport._nodeAddrToNode
    finally:
        raft._doDestroy()


def test_a_catch_up_can_be_cancelled_and_leaves_nothing_behind(tmp_path, cluster_addrs):
    a = cluster_addrs
    raft = _lone_leader(tmp_path / "n1", a)  # a[1] is not running
    try:
        added: list = []
        cancelled: list = []
        raft.change_members(membership.ADD, _spec(a, 1), lambda index, error: added.append((index, error)))
        raft._run_membership_ops()
        raft.cancel_catch_up("n9", lambda index, error: cancelled.append(error))  # not the one catching up
        raft._run_membership_ops()
        assert type(cancelled[0]).__name__ == "ChangeRefused" and raft._catch_up is not None and not added
        raft.cancel_catch_up("n2", lambda index, error: cancelled.append(error))
        raft._run_membership_ops()
        assert cancelled[1] is None and type(added[0][1]).__name__ == "CatchUpEnded"
        assert raft._catch_up is None and not raft._SyncObj__readonlyNodes and not raft._change_queued
        assert a[1] not in raft._SyncObj__transport._nodeAddrToNode
        assert [m["id"] for m in raft.member_list] == ["n1"]
    finally:
        raft._doDestroy()
