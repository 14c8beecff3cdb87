"""Replication through real Replica processes: commit, read back on every replica, digests agree."""
from __future__ import annotations

import asyncio

from tests.support.harness_cluster import HarnessCluster


async def test_three_replicas_commit_and_agree(tmp_path):
    async with HarnessCluster(tmp_path) as cluster:
        leader = await cluster.wait_leader()
        answers = await asyncio.gather(*[
            cluster.propose(leader, [{"kind": "put", "key": f"k{i}", "value": i}]) for i in range(200)])
        assert all("index" in a for a in answers), answers[:3]
        statuses = await cluster.wait_converged()
        assert statuses[0]["applied_index"] >= max(a["index"] for a in answers)
        for i in range(3):
            keys = await cluster.keys(i)
            assert keys == {f"k{i}": i for i in range(200)}
        # Group commit: 200 concurrent proposals share far fewer log entries.
        assert len({a["index"] for a in answers}) < 200
