"""Replica.propose's timeout: CommitUnknown after `timeout`, and a result that arrives later is dropped quietly.

Unit test of the asyncio side only (a stand-in node that never commits); the Raft side is covered by the
integration tests on real processes."""
from __future__ import annotations

import asyncio
import collections
import gc
import time

import pytest

from raftqueue.clock import Clock
from raftqueue.ids import IdGenerator
from raftqueue.raft.errors import CommitUnknown
from raftqueue.replica import Replica


class _SilentLeader:
    is_leader = True

    def __init__(self) -> None:
        self.proposals: list = []

    def submit(self, proposal) -> None:
        self.proposals.append(proposal)


def _replica(node) -> Replica:
    replica = object.__new__(Replica)
    replica.node, replica._closed = node, False
    replica.clock, replica.ids = Clock(), IdGenerator()
    replica._loop = asyncio.get_running_loop()
    replica._completions, replica._completions_scheduled = collections.deque(), False
    replica.on_committed = None
    return replica


async def test_a_proposal_that_does_not_commit_in_time_is_commit_unknown_and_a_late_result_is_dropped(caplog):
    node = _SilentLeader()
    replica = _replica(node)
    started = time.monotonic()
    with pytest.raises(CommitUnknown):
        await replica.propose([{"kind": "noop"}], timeout=0.2)
    assert 0.15 < time.monotonic() - started < 2.0
    node.proposals[0].on_done(7, [{}], None)  # the entry commits after all: nobody waits for it any more
    await asyncio.sleep(0.05)
    gc.collect()
    assert "exception was never retrieved" not in caplog.text


async def test_a_proposal_that_commits_returns_index_and_results():
    node = _SilentLeader()
    replica = _replica(node)
    task = asyncio.ensure_future(replica.propose([{"kind": "noop"}], timeout=5))
    await asyncio.sleep(0.01)
    node.proposals[0].on_done(9, [{"ok": 1}], None)
    assert await task == (9, [{"ok": 1}])
