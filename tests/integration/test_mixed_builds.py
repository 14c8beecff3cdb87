"""Nodes of different builds in one cluster: a node never applies a command its build does not know.

A newer build may add a store command. A node of an older build that answered it like a malformed command would
keep running with a state that differs from the newer replicas'. Instead it stops (exit status 78) at that
entry, and applies it once it runs the newer build. A leader refuses to propose a command its own build does
not know (a newer follower's planned write), so it cannot stop its own replicas. Real node processes; the
newer build is tests/support/newer_build.py (this build plus one store command).
"""
from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson

from raftqueue.api.batch_forward import AUTH_HEADER, PATH, batch_key, decode_frame, encode_frame, sign
from raftqueue.raft.errors import EXIT_CANNOT_APPLY
from tests.support.api_cluster import Api, make_cluster, started_cluster
from tests.support.procs import REPO

NEWER = [sys.executable, str(REPO / "tests" / "support" / "newer_build.py")]
THIS = [sys.executable, "-m", "raftqueue"]


def run_as(node, build: list[str]) -> None:
    """Make the node's next start run `build` (its arguments from `serve` on stay the same)."""
    node.argv = build + node.argv[node.argv.index("serve"):]


async def wait_exited(node, timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while node.alive():
        assert time.monotonic() < deadline, f"{node.name} is still running"
        await asyncio.sleep(0.1)
    return node.proc.returncode


async def test_an_older_node_stops_at_a_newer_command_and_applies_it_once_upgraded(tmp_path):
    trigger = tmp_path / "propose-a-note"
    cluster = make_cluster(tmp_path / "cluster", env={"RAFTQUEUE_TEST_NOTE_TRIGGER": str(trigger)})
    for node in cluster.nodes:
        run_as(node, NEWER)
    cluster.start_all()
    try:
        await cluster.wait_ready()
        async with Api(cluster) as api:
            leader = await api.leader()
            followers = [i for i in range(3) if i != leader]
            for i in range(20):
                status, _, _ = await api.post(i % 3, "/jobs", {"queue": "mixed", "payload": i})
                assert status == 201
            # An upgrade done the wrong way round: the leader runs the newer build, its followers this one.
            for i in followers:
                cluster.nodes[i].terminate()
                run_as(cluster.nodes[i], THIS)
                cluster.nodes[i].start()
            await cluster.wait_ready()
            await api.wait_converged()
            assert await api.leader() == leader, "leadership moved while the followers restarted"
            before = await api.cluster_status(leader)

            trigger.touch()  # the newer leader proposes one command this build does not know
            for i in followers:
                assert await wait_exited(cluster.nodes[i]) == EXIT_CANNOT_APPLY
                log = cluster.nodes[i].log_text()
                assert "cannot apply committed entry" in log and "unknown command kind 'newer_build_note'" in log
            assert not trigger.exists()
            status, stats, _ = await api.get(leader, "/stats")
            assert status == 200 and stats.get("newer_build_notes") == 1

            # Upgraded, each follower applies the entry it stopped at, and every replica has the same state.
            for i in followers:
                run_as(cluster.nodes[i], NEWER)
                cluster.nodes[i].start()
            await cluster.wait_ready()
            statuses = await api.wait_converged()
            assert statuses[0]["applied_index"] > before["applied_index"]
            for i in followers:
                status, stats, _ = await api.get(i, "/stats", params={"consistency": "stale"})
                assert status == 200 and stats.get("newer_build_notes") == 1 and stats["total_submits"] == 20
    finally:
        cluster.stop_all()


async def test_a_leader_refuses_a_planned_write_its_build_does_not_know(tmp_path):
    async with started_cluster(tmp_path) as (cluster, api):
        leader = await api.leader()
        key = batch_key(cluster.secret_path.read_text().strip())
        token = cluster.admin_key
        plans = [[{"kind": "newer_build_note"}],
                 [{"kind": "submit", "v": 2, "queue": "q", "payload": 1}],
                 [{"kind": "pause_queue", "queue": "q"}, {"kind": "newer_build_note"}]]
        items = [{"k": "p", "r": ["POST", "/jobs"], "t": token, "n": len(orjson.dumps(p))} for p in plans]
        frame = encode_frame(items, [orjson.dumps(p) for p in plans])
        async with aiohttp.ClientSession() as session:
            async with session.post(cluster.urls[leader] + PATH, data=frame,
                                    headers={AUTH_HEADER: sign(key, frame)}) as resp:
                assert resp.status == 200
                answers = decode_frame(await resp.read())
        assert [meta["s"] for meta, _ in answers] == [501, 501, 501]
        assert "unknown command kind 'newer_build_note'" in answers[0][0]["m"]
        assert "unsupported command version 2" in answers[1][0]["m"]
        await api.wait_converged()
        assert all(cluster.nodes[i].alive() for i in range(3))
        for i in range(3):  # nothing of a refused plan was written, not even the known command beside it
            status, stats, _ = await api.get(i, "/stats", params={"consistency": "stale"})
            assert status == 200 and "q" not in stats["by_queue"] and "newer_build_notes" not in stats
            assert stats["total_submits"] == 0
