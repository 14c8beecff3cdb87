"""RaftNode applies at most `apply_budget_bytes` of committed log per tick, and always at least one entry.

The library's own apply loop is replaced by a recorder here (it is exercised by every integration test); what
is checked is which commit index our override shows it, and that the real one is put back."""
from __future__ import annotations

import pytest
from pysyncobj import SyncObj

from tests.support.idle_node import close_idle_node, idle_node


@pytest.fixture
def node(tmp_path, monkeypatch):
    raft = idle_node(tmp_path, apply_budget_bytes=1000)
    seen: list[int] = []

    def library_apply(self):
        seen.append(self._SyncObj__raftCommitIndex)
        self._SyncObj__raftLastApplied = self._SyncObj__raftCommitIndex
        return True
    monkeypatch.setattr(SyncObj, "_SyncObj__applyLogEntries", library_apply)
    raft.seen = seen
    yield raft
    close_idle_node(raft)


def _commit(raft, sizes: list[int]) -> None:
    journal = raft._journal
    last = journal[-1][1]
    for n, size in enumerate(sizes, start=last + 1):
        journal.add(b"x" * size, n, 1)
    raft._SyncObj__raftCommitIndex = journal[-1][1]


def test_a_backlog_is_applied_a_budget_per_tick(node):
    start = node._SyncObj__raftLastApplied
    _commit(node, [300] * 10)  # 3,000 bytes: 1,000 a tick is four entries, then four, then two
    end = node._SyncObj__raftCommitIndex
    while node._SyncObj__raftLastApplied < end:
        node._SyncObj__applyLogEntries()
        assert node._SyncObj__raftCommitIndex == end  # the real commit index is back after each call
    assert node.seen == [start + 4, start + 8, end]


def test_an_entry_bigger_than_the_budget_is_applied_alone(node):
    start = node._SyncObj__raftLastApplied
    _commit(node, [5000, 10, 10])
    node._SyncObj__applyLogEntries()
    node._SyncObj__applyLogEntries()
    assert node.seen == [start + 1, start + 3]


def test_control_a_budget_larger_than_the_backlog_applies_everything_at_once(node):
    node._settings.apply_budget_bytes = 10**9
    _commit(node, [300] * 10)
    node._SyncObj__applyLogEntries()
    assert node.seen == [node._SyncObj__raftCommitIndex]
