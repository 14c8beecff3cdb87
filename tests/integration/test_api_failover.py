"""Kill the leader while clients submit, lease and ack through every node; kill everything; pause the leader.

Clients behave as careful users: submits carry idempotency keys and are retried on errors and timeouts;
workers lease with a long visibility timeout and ack with their lease token.
"""
from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict

import aiohttp

from raftqueue.timefmt import parse_rfc3339
from tests.support.api_cluster import Api, started_cluster

LEASE_MS = 8000


class Workload:
    def __init__(self, api: Api, queue: str = "fo") -> None:
        self.api = api
        self.queue = queue
        self.submitted: dict[str, str] = {}          # idempotency key -> job id (2xx answers)
        self.leases: dict[str, list[dict]] = defaultdict(list)  # job id -> ok leases
        self.acks: dict[str, int] = defaultdict(int)  # job id -> ok acks
        self.stop_producing = asyncio.Event()
        self.stop_working = asyncio.Event()
        self.last_ok_write = 0.0
        self.rng = random.Random(7)

    def _node(self) -> int:
        alive = [i for i in range(self.api.cluster.size) if self.api.cluster.nodes[i].alive()]
        return self.rng.choice(alive)

    async def producer(self, name: str) -> None:
        for seq in itertools.count():
            if self.stop_producing.is_set():
                return
            key = f"{name}-{seq}"
            for _attempt in range(40):
                try:
                    status, body, _ = await self.api.post(self._node(), "/jobs",
                                                          {"payload": seq, "queue": self.queue,
                                                           "idempotency_key": key}, timeout=10)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    status, body = None, None
                if status in (200, 201):
                    self.submitted[key] = body["job_id"]
                    self.last_ok_write = time.monotonic()
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.005)

    async def worker(self) -> None:
        while not self.stop_working.is_set():
            try:
                status, job, _ = await self.api.post(self._node(), "/jobs/lease",
                                                     {"queue": self.queue, "lease_ms": LEASE_MS, "wait_ms": 500},
                                                     timeout=10)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                await asyncio.sleep(0.05)
                continue
            if status != 200:
                await asyncio.sleep(0.02)
                continue
            job["_granted_ms"] = parse_rfc3339(job["lease_until"]) - LEASE_MS
            self.leases[job["job_id"]].append(job)
            for _attempt in range(20):
                try:
                    status, body, _ = await self.api.post(self._node(), f"/jobs/{job['job_id']}/ack",
                                                          {"lease_token": job["lease_token"], "result": "ok"},
                                                          timeout=10)
                except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                    status = None
                if status == 200:
                    self.acks[job["job_id"]] += 1
                    self.last_ok_write = time.monotonic()
                    break
                if status in (404, 409):
                    break  # lease lost (or already acked by our unknown attempt): the job is redelivered
                await asyncio.sleep(0.05)

    async def drain_and_check(self, timeout: float = 60.0) -> None:
        """Stop producing, let workers finish everything, then check what every client saw."""
        self.stop_producing.set()
        deadline = time.monotonic() + timeout
        leader = await self.api.leader()
        while True:
            status, stats, _ = await self.api.get(leader, "/stats", params={"consistency": "leader"})
            by_queue = stats["by_queue"].get(self.queue, {}).get("by_state", {})
            open_jobs = sum(n for state, n in by_queue.items() if state not in ("ACKED", "DEAD", "CANCELLED"))
            if status == 200 and open_jobs == 0:
                break
            assert time.monotonic() < deadline, f"queue did not drain: {by_queue}"
            await asyncio.sleep(0.2)
        self.stop_working.set()
        assert len(self.submitted) > 50
        lost = []
        for key, job_id in self.submitted.items():
            status, job, _ = await self.api.get(leader, f"/jobs/{job_id}")
            if status != 200 or job["state"] != "ACKED":
                lost.append((key, job_id, status, job))
        assert not lost, f"{len(lost)} acknowledged submits lost or unfinished, e.g. {lost[:3]}"
        assert len(set(self.submitted.values())) == len(self.submitted), "one idempotency key made two jobs"
        double = {j: n for j, n in self.acks.items() if n > 1}
        assert not double, f"jobs acked twice: {double}"
        for job_id, leases in self.leases.items():
            leases.sort(key=lambda j: j["attempt"])
            for first, second in zip(leases, leases[1:]):
                first_end = parse_rfc3339(first["lease_until"])
                assert second["_granted_ms"] >= first_end, f"overlapping leases on {job_id}: {first} {second}"


async def _run_workload(api: Api, seconds: float, during) -> Workload:
    work = Workload(api)
    tasks = [asyncio.create_task(work.producer(f"p{i}")) for i in range(4)]
    tasks += [asyncio.create_task(work.worker()) for _ in range(4)]
    await asyncio.sleep(seconds / 2)
    await during(work)
    await asyncio.sleep(seconds / 2)
    await work.drain_and_check()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return work


async def test_kill_leader_under_load_loses_nothing_and_restarted_node_catches_up(tmp_path):
    async with started_cluster(tmp_path) as (cluster, api):
        killed = []

        async def kill_leader(work: Workload) -> None:
            leader = await api.leader()
            killed.append(leader)
            killed_at = time.monotonic()
            cluster.nodes[leader].kill()
            new_leader = await api.leader(exclude={leader})
            assert new_leader != leader
            while work.last_ok_write < killed_at:
                assert time.monotonic() - killed_at < 10, "no write succeeded after the leader died"
                await asyncio.sleep(0.01)

        await _run_workload(api, 4.0, kill_leader)
        cluster.nodes[killed[0]].start()
        await cluster.wait_ready()
        statuses = await api.wait_converged()
        assert len({s["state_digest"] for s in statuses}) == 1


async def test_kill_all_nodes_and_restart_keeps_every_answered_write(tmp_path):
    async with started_cluster(tmp_path) as (cluster, api):
        answered: dict[str, int] = {}
        for i in range(60):
            status, body, headers = await api.post(i % 3, "/jobs", {"payload": i, "queue": "all"})
            assert status == 201
            answered[body["job_id"]] = i
        cluster.kill_all()
        cluster.start_all()
        await cluster.wait_ready()
        await api.wait_converged()
        for node in range(3):
            for job_id, payload in answered.items():
                status, job, _ = await api.get(node, f"/jobs/{job_id}", params={"consistency": "stale"})
                assert status == 200 and job["payload"] == payload


async def test_paused_leader_steps_down_and_nothing_diverges(tmp_path):
    async with started_cluster(tmp_path) as (cluster, api):
        paused: list[int] = []
        new_term: list[int] = []
        stepped_down: list[float] = []

        async def pause_leader(work: Workload) -> None:
            leader = await api.leader()
            paused.append(leader)
            cluster.nodes[leader].pause()
            successor = await api.leader(exclude={leader})
            new_term.append((await api.cluster_status(successor, digest=False))["term"])
            await asyncio.sleep(1.0)
            cluster.nodes[leader].resume()
            resumed = time.monotonic()
            while time.monotonic() - resumed < 5.0:  # resumed, it must step down at once
                seen = await api.cluster_status(leader, digest=False)
                if seen is not None and seen["role"] == "follower":
                    stepped_down.append(time.monotonic() - resumed)
                    return
                await asyncio.sleep(0.02)

        await _run_workload(api, 4.0, pause_leader)
        assert stepped_down, "the resumed old leader did not step down within 5 s"
        status = await api.cluster_status(paused[0])
        assert status["role"] == "follower", (status["role"], status["term"], new_term)  # terms: to tell a
        # leader that never stepped down (its old term) from one that won a later election (a later term)
        await api.wait_converged()


async def test_a_stall_of_the_whole_host_changes_no_leader(tmp_path):
    """Every node stopped and resumed together, as when the host stalls (a paused VM, a laptop that slept, a
    machine starved of CPU): nobody failed, so the leader keeps its role and term, and writes go on. Before
    nodes discounted their own stalls, the leader stepped down at its first tick and the followers elected
    another: a leader change, and 504s for the writes in flight."""
    async with started_cluster(tmp_path) as (cluster, api):
        leader = await api.leader()
        status, _, _ = await api.post(leader, "/jobs", {"payload": "before"})
        assert status == 201
        before = await api.cluster_status(leader, digest=False)
        for node in cluster.nodes:
            node.pause()
        await asyncio.sleep(2.0)  # longer than the leader's step-down (1.2 s) and the followers' grace (1 s)
        for node in cluster.nodes:
            node.resume()
        await asyncio.sleep(1.5)  # several election timeouts: time for a leader change to show
        status, _, _ = await api.post((leader + 1) % cluster.size, "/jobs", {"payload": "after"})
        assert status == 201
        seen = [await api.cluster_status(i, digest=False) for i in range(cluster.size)]
        assert [(s["role"] == "leader", s["term"]) for s in seen] == \
            [(i == leader, before["term"]) for i in range(cluster.size)], seen
        await api.wait_converged()
