"""Crash consistency: kill -9 every replica at a random moment (compaction running often), restart, check.

Every proposal that was acknowledged before the kill must be applied on every replica afterwards, and the
replicas' digests must agree. 20 rounds by default; `--long` runs 200.
"""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from tests.support.harness_cluster import HarnessCluster

# Compact every ~150 entries so that kills land before, during and after snapshot writes.
RAFT = {"compact_min_entries": 150}


async def _writer(cluster: HarnessCluster, leader_hint: list[int], name: str, acked: dict, stop: asyncio.Event):
    seq = 0
    while not stop.is_set():
        seq += 1
        key = f"{name}-{seq}"
        target = leader_hint[0]
        try:
            answer = await cluster.propose(target, [{"kind": "put", "key": key, "value": seq}], timeout=2.0)
        except Exception:
            await asyncio.sleep(0.01)
            continue
        if "index" in answer:
            acked[key] = seq
        else:
            await asyncio.sleep(0.005)


async def _one_round(cluster: HarnessCluster, rng: random.Random, round_no: int, acked: dict) -> None:
    leader = await cluster.wait_leader(timeout=20)
    hint = [leader]
    stop = asyncio.Event()
    writers = [asyncio.create_task(_writer(cluster, hint, f"r{round_no}w{w}", acked, stop)) for w in range(8)]
    await asyncio.sleep(rng.uniform(0.2, 1.2))
    for node in cluster.nodes:          # as close to "all at once" as a loop of kill(2) gets
        node.signal(9)
    stop.set()
    await asyncio.gather(*writers, return_exceptions=True)
    for node in cluster.nodes:
        node.kill()
    for node in cluster.nodes:
        node.start()


async def _check(cluster: HarnessCluster, acked: dict) -> None:
    await cluster.wait_leader(timeout=20)
    await cluster.wait_converged(timeout=30)
    for i in range(cluster.size):
        present = await cluster.keys(i)
        missing = [k for k, v in acked.items() if present.get(k) != v]
        assert not missing, f"replica {i} lost {len(missing)} acknowledged writes, e.g. {missing[:5]}"


async def _run(tmp_path, rounds: int, seed: int) -> None:
    rng = random.Random(seed)
    acked: dict[str, int] = {}
    async with HarnessCluster(tmp_path, raft=RAFT) as cluster:
        for round_no in range(rounds):
            await _one_round(cluster, rng, round_no, acked)
            await _check(cluster, acked)
        logs = "".join(node.log_text() for node in cluster.nodes)
        assert "CRITICAL" not in logs
        assert "snapshot at index" in logs, "compaction never ran: the test would not cover it"
    assert len(acked) > rounds * 20


async def test_kill_all_replicas_repeatedly_loses_nothing(tmp_path):
    await _run(tmp_path, rounds=20, seed=int(time.time()))


@pytest.mark.long
@pytest.mark.timeout(3600)
async def test_kill_all_replicas_200_rounds(tmp_path):
    await _run(tmp_path, rounds=200, seed=int(time.time()))
