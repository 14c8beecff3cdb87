"""`scripts/bench`: the whole product under load, seen by HTTP clients.

    ./scripts/bench                       # all scenarios on a local 3-node cluster, fsync on
    ./scripts/bench --quick               # seconds, not minutes (a smoke test keeps the script working)
    ./scripts/bench --scenarios 1 2 --json out.json
    ./scripts/bench --urls http://a:8081,http://b:8081,http://c:8081   # an existing cluster

Scenarios (jobs/s and p50/p95/p99 latency each):
  1 submit, one job per request, 64 concurrent clients
  2 full life cycle, one job per request: 64 producers + 64 long-polling workers (submit, lease, ack)
  3 full life cycle batched: submit batches of 100, lease max_jobs 100, batch ack
  4 fixed offered load of 1,000 submits/s (open loop, one job per request): submit latency and submit->ack
    latency; 8 long-polling workers lease up to 50 jobs at a time and ack them in one request, as
    `raftqueue worker` leases as many jobs as it has free slots
  5 lease+ack rate with 1,000 / 100,000 / 1,000,000 jobs queued (timed once no node is writing the snapshot
    the preload caused); afterwards the jobs left queued are leased and acked (not timed as a scenario), so
    that scenario 6 starts without them
  6 RSS of each node and disk of each data dir after 1,000,000 jobs went through, and over a soak
In 2 and 3 producers wait while more than 1,000 / 10,000 jobs are unacked (a steady state, not a backlog that
grows all run); scenario 3 runs 8 producers and 16 workers.
Before the first scenario, 5 s of unmeasured life cycles warm the cluster up (connections, the first
elections, the first snapshot); `--warmup 0` skips it. The header also prints how long fdatasync takes on the
disk of the data directory: a disk that stalls for hundreds of milliseconds now and then (a shared virtual
disk does) sets every p99 that waits for an fsync, whatever the queue does.
The load generator is this process (asyncio, keep-alive via `rawhttp`, requests spread over all nodes); the
nodes are separate processes. On a shared 2-core machine they compete for the same cores: the figures include that.
So scenarios 1-4 also print the CPU one job cost the nodes and the load generator (`cpu.py`): N jobs/s on C
cores needs the two together under C * 1000 / N ms, and that figure moves less than jobs/s when the machine
is busy with something else. `--profile DIR` samples the nodes with py-spy during scenarios 1-4 and prints where
their GIL time went, by layer (`profile.py`; `.venv/bin/pip install 'raftqueue[profile]'` first).
Every row also says when it ran (UTC), to find its stretch in the nodes' logs (`--node-log-level INFO`).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable

import aiohttp
import orjson

from raftqueue.bench import profile
from raftqueue.bench.cpu import CpuMeter
from raftqueue.bench.rawhttp import HTTPFailed, RawHTTP
from raftqueue.localcluster import LocalCluster, free_ports

PAYLOAD_PAD = "x" * 170  # with the rest of the payload, ~200 bytes per job


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def summary(name: str, count: int, seconds: float, latencies_ms: list[float], extra: dict | None = None) -> dict:
    return {"scenario": name, "jobs": count, "seconds": round(seconds, 2), "jobs_per_s": round(count / seconds, 1),
            "p50_ms": round(pct(latencies_ms, 0.50), 2), "p95_ms": round(pct(latencies_ms, 0.95), 2),
            "p99_ms": round(pct(latencies_ms, 0.99), 2), **(extra or {})}


class Load:
    """The load generator's client: requests spread round-robin over the nodes, on lean keep-alive connections."""

    def __init__(self, urls: list[str], key: str | None = None) -> None:
        self.urls = urls
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.http: RawHTTP | None = None
        self._rr = 0

    async def __aenter__(self) -> "Load":
        self.http = RawHTTP(self.headers, timeout_s=60.0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.http is not None
        await self.http.close()

    def url(self) -> str:
        self._rr += 1
        return self.urls[self._rr % len(self.urls)]

    async def post(self, path: str, body: dict | bytes, url: str | None = None) -> tuple[int, dict | None]:
        """(status, body); (0, None) when the connection failed (the scenario counts it as not done)."""
        assert self.http is not None
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        try:
            status, raw = await self.http.request("POST", url or self.url(), path, data)
            return status, (orjson.loads(raw) if raw else None)
        except (HTTPFailed, orjson.JSONDecodeError):
            return 0, None

    async def get(self, path: str, url: str | None = None) -> dict:
        assert self.http is not None
        _, raw = await self.http.request("GET", url or self.url(), path)
        return orjson.loads(raw)


def job_body(queue: str, n: int) -> dict:
    return {"payload": {"n": n, "t": time.time(), "pad": PAYLOAD_PAD}, "queue": queue}


# ----- scenarios -----------------------------------------------------------------------------------------------
async def scenario_submit(load: Load, seconds: float, clients: int = 64) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(c: int) -> None:
        nonlocal errors
        n = 0
        while time.perf_counter() < stop:
            n += 1
            started = time.perf_counter()
            status, _ = await load.post("/jobs", job_body("s1", n))
            if status in (200, 201):
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                errors += 1
    started = time.perf_counter()
    await asyncio.gather(*[client(c) for c in range(clients)])
    return summary("1 submit, 64 clients", len(latencies), time.perf_counter() - started, latencies,
                   {"errors": errors})


class Window:
    """Producers wait while more than `limit` submitted jobs are not yet acked.

    Unthrottled producers outrun the workers, the backlog grows for the whole run and the producers' requests
    take the CPU the workers need: the ack rate then measures that contest, not what the queue sustains. A
    bounded backlog is the steady state a life-cycle rate means; the row also shows the submit rate."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.submitted = 0
        self.acked = 0
        self._room = asyncio.Event()
        self._room.set()

    def add_submitted(self, n: int) -> None:
        self.submitted += n
        if self.submitted - self.acked > self.limit:
            self._room.clear()

    def add_acked(self, n: int) -> None:
        self.acked += n
        if self.submitted - self.acked <= self.limit:
            self._room.set()

    async def room(self) -> None:
        await self._room.wait()


async def _workers(load: Load, queue: str, count: int, stop: asyncio.Event, acked: list, e2e: list,
                   max_jobs: int = 1, window: Window | None = None) -> list[asyncio.Task]:
    async def worker() -> None:
        while not stop.is_set():
            body = {"queue": queue, "wait_ms": 500, "lease_ms": 30_000}
            if max_jobs > 1:
                body["max_jobs"] = max_jobs
            status, data = await load.post("/jobs/lease", body)
            if status != 200 or not data:
                continue
            jobs = data["jobs"] if "jobs" in data else [data]
            if not jobs:
                continue
            if max_jobs > 1:
                acks = [{"job_id": j["job_id"], "lease_token": j["lease_token"], "result": 1} for j in jobs]
                status, _ = await load.post("/jobs/ack", {"acks": acks})
            else:
                job = jobs[0]
                status, _ = await load.post(f"/jobs/{job['job_id']}/ack", {"lease_token": job["lease_token"]})
            if status == 200:
                now = time.time()
                acked.append(len(jobs))
                if window is not None:
                    window.add_acked(len(jobs))
                for job in jobs:
                    e2e.append((now - job["payload"]["t"]) * 1000)
    return [asyncio.create_task(worker()) for _ in range(count)]


async def _life_cycle(load: Load, name: str, queue: str, seconds: float, producers: int, workers: int,
                      batch: int, backlog: int) -> dict:
    stop, produce_stop = asyncio.Event(), time.perf_counter() + seconds
    acked: list[int] = []
    e2e: list[float] = []
    window = Window(backlog)
    tasks = await _workers(load, queue, workers, stop, acked, e2e, max_jobs=batch, window=window)

    async def producer(p: int) -> None:
        n = 0
        while time.perf_counter() < produce_stop:
            await window.room()
            n += 1
            if batch > 1:
                status, _ = await load.post("/jobs/batch", {"jobs": [job_body(queue, n * batch + i)
                                                                     for i in range(batch)]})
            else:
                status, _ = await load.post("/jobs", job_body(queue, n))
            if status in (200, 201):
                window.add_submitted(batch)
    started = time.perf_counter()
    await asyncio.gather(*[producer(p) for p in range(producers)])
    elapsed = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*tasks)
    return summary(name, sum(acked), elapsed, e2e,
                   {"latency": "submit->ack", "submitted_per_s": round(window.submitted / elapsed, 1),
                    "producers": producers, "workers": workers, "backlog_limit": backlog})


async def scenario_lifecycle(load: Load, seconds: float, producers: int = 64, workers: int = 64) -> dict:
    return await _life_cycle(load, "2 life cycle, 64+64 clients", "s2", seconds, producers, workers, 1,
                             backlog=1_000)


async def scenario_batched(load: Load, seconds: float, producers: int = 8, workers: int = 16) -> dict:
    return await _life_cycle(load, "3 life cycle batched (100)", "s3", seconds, producers, workers, 100,
                             backlog=10_000)


async def scenario_fixed_rate(load: Load, seconds: float, rate: int = 1000, workers: int = 8,
                              max_jobs: int = 50) -> dict:
    stop = asyncio.Event()
    acked: list[int] = []
    e2e: list[float] = []
    tasks = await _workers(load, "s4", workers, stop, acked, e2e, max_jobs=max_jobs)
    submit_lat: list[float] = []
    pending: set[asyncio.Task] = set()

    async def one(n: int) -> None:
        started = time.perf_counter()
        status, _ = await load.post("/jobs", job_body("s4", n))
        if status in (200, 201):
            submit_lat.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    total = int(seconds * rate)
    for n in range(total):  # open loop: send on schedule whether or not earlier answers came back
        due = started + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(n))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    return summary(f"4 fixed {rate}/s submits", len(submit_lat), elapsed, submit_lat,
                   {"offered_per_s": rate, "workers": workers, "lease_max_jobs": max_jobs, "submit_p50_ms": round(pct(submit_lat, .5), 2),
                    "submit_p99_ms": round(pct(submit_lat, .99), 2), "e2e_p50_ms": round(pct(e2e, .5), 2),
                    "e2e_p99_ms": round(pct(e2e, .99), 2)})


async def preload(load: Load, queue: str, count: int, concurrency: int = 8) -> None:
    remaining = [count]

    async def loader() -> None:
        while remaining[0] > 0:
            n = min(1000, remaining[0])
            remaining[0] -= n
            status, _ = await load.post("/jobs/batch", {"jobs": [job_body(queue, i) for i in range(n)]})
            if status != 201:
                remaining[0] += n
                await asyncio.sleep(0.1)
    await asyncio.gather(*[loader() for _ in range(concurrency)])


def snapshot_children(cluster: LocalCluster) -> int:
    """How many nodes have a forked child right now: a node writes its snapshots from one."""
    busy = 0
    for node in cluster.nodes:
        try:
            busy += any(Path(task, "children").read_text().strip()
                        for task in Path(f"/proc/{node.pid}/task").iterdir())
        except OSError:
            pass
    return busy


async def settle(cluster: LocalCluster | None, limit_s: float) -> None:
    """Wait (at most `limit_s`) until no node is writing a snapshot: a million-job snapshot takes seconds of
    CPU on every node, and a rate measured meanwhile measures the snapshot. A second without one is quiet."""
    if cluster is None:
        await asyncio.sleep(min(limit_s, 10.0))
        return
    end, quiet_since = time.perf_counter() + limit_s, time.perf_counter()
    while time.perf_counter() < end and time.perf_counter() - quiet_since < 1.0:
        await asyncio.sleep(0.2)
        if snapshot_children(cluster):
            quiet_since = time.perf_counter()


async def scenario_lease_ack_at(load: Load, cluster: LocalCluster | None, queued: int, seconds: float,
                                workers: int = 64) -> dict:
    queue = f"s5-{queued}"
    await preload(load, queue, queued)
    await asyncio.sleep(1.0)  # the preload's last entries trigger the snapshot, if one is due
    await settle(cluster, 120.0)
    stop = asyncio.Event()
    acked: list[int] = []
    lat: list[float] = []

    async def worker() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            status, job = await load.post("/jobs/lease", {"queue": queue, "lease_ms": 30_000})
            if status != 200:
                continue
            status, _ = await load.post(f"/jobs/{job['job_id']}/ack", {"lease_token": job["lease_token"]})
            if status == 200:
                acked.append(1)
                lat.append((time.perf_counter() - started) * 1000)

    async def replenish() -> None:  # keep the queue length at `queued`
        done = 0
        while not stop.is_set():
            owed = len(acked) - done
            if owed >= 100:
                await load.post("/jobs/batch", {"jobs": [job_body(queue, i) for i in range(100)]})
                done += 100
            else:
                await asyncio.sleep(0.01)
    tasks = [asyncio.create_task(worker()) for _ in range(workers)] + [asyncio.create_task(replenish())]
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return summary(f"5 lease+ack, {queued:,} queued", len(acked), time.perf_counter() - started, lat,
                   {"latency": "lease+ack"})


async def drain(load: Load, queues: list[str], workers: int = 16) -> dict:
    """Lease and ack (batches of 100) every job left in `queues`, so that the next scenario starts without them.

    Scenario 5 leaves about 1.1M jobs queued. Scenario 6 measures memory and disk after 1M jobs went through and
    over a soak "once retention applies": with a million stale queued jobs beside it, every snapshot of the soak
    is 0.5 GB and the soak measures that backlog's snapshots (about +-40% of disk from sample to sample), and
    the "1M live" figure measures 1.1M. The drain is timed and printed; it is not a scenario."""
    started = time.perf_counter()
    done = [0]

    async def worker() -> None:
        empty = 0
        while empty < 2:  # two empty answers in a row: nothing is left (or the cluster is failing: stop anyway)
            status, data = await load.post("/jobs/lease", {"queues": queues, "max_jobs": 100, "lease_ms": 60_000})
            jobs = (data or {}).get("jobs") or []
            if status != 200 or not jobs:
                empty += 1
                await asyncio.sleep(0.2)
                continue
            empty = 0
            acks = [{"job_id": j["job_id"], "lease_token": j["lease_token"], "result": 1} for j in jobs]
            status, _ = await load.post("/jobs/ack", {"acks": acks})
            if status == 200:
                done[0] += len(jobs)
    await asyncio.gather(*[worker() for _ in range(workers)])
    return {"scenario": "drain after 5", "jobs": done[0], "seconds": round(time.perf_counter() - started, 1)}


def node_rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now (VmRSS) or the most it has been since the process started (VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def fsync_probe(directory: Path, seconds: float = 2.0) -> dict:
    """fdatasync latency of small appends in `directory`, the cost every commit pays at least once.

    `stalled_pct`: the share of the probe's time at which an fdatasync then starting or in progress still had
    more than 10 ms to go (a call of t > 10 ms contributes t - 10). Every commit waits for an fsync, so a submit
    arriving then takes over 10 ms whatever the code does: above 1%, a submit p99 of 10 ms is out of reach on
    this disk.
    """
    path = directory / ".fsync-probe"
    times: list[float] = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    began = time.perf_counter()
    try:
        end = began + seconds
        while time.perf_counter() < end:
            os.write(fd, b"x" * 300)
            started = time.perf_counter()
            os.fdatasync(fd)
            times.append((time.perf_counter() - started) * 1000)
    finally:
        os.close(fd)
        path.unlink()
    elapsed_ms = (time.perf_counter() - began) * 1000
    return {"seconds": round(elapsed_ms / 1000, 1), "calls": len(times), "p50_ms": round(pct(times, .5), 2),
            "p999_ms": round(pct(times, .999), 2), "max_ms": round(max(times), 1),
            "over_50ms": sum(t > 50 for t in times),
            "stalled_pct": round(100 * sum(t - 10 for t in times if t > 10) / elapsed_ms, 2)}


async def warm_up(load: Load, seconds: float, clients: int = 16) -> None:
    """Unmeasured life cycles: the first seconds of a new cluster (connections, a second election, the first
    snapshot) are not what any scenario is about."""
    end = time.perf_counter() + seconds

    async def client(c: int) -> None:  # whole life cycles, so that no job is left behind to skew 5 and 6
        n = 0
        while time.perf_counter() < end:
            n += 1
            await load.post("/jobs", job_body(f"warmup-{c}", n))
            status, job = await load.post("/jobs/lease", {"queue": f"warmup-{c}", "lease_ms": 30_000})
            if status == 200 and job:
                await load.post(f"/jobs/{job['job_id']}/ack", {"lease_token": job["lease_token"]})
    await asyncio.gather(*[client(c) for c in range(clients)])


def dir_mb(path: Path) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total / 1e6


async def scenario_resources(load: Load, cluster: LocalCluster | None, through: int, soak_s: float) -> dict:
    if cluster is None:
        return {"scenario": "6 resources", "skipped": "needs a cluster this script started (pids, data dirs)"}

    def sample() -> dict:
        return {"rss_mb": [round(node_rss_mb(n.pid), 1) for n in cluster.nodes],
                "disk_mb": [round(dir_mb(cluster.data_dir / i), 1) for i in cluster.ids]}
    stop = asyncio.Event()
    acked: list[int] = []
    e2e: list[float] = []
    tasks = await _workers(load, "s6", 8, stop, acked, e2e, max_jobs=100)
    produced = [0]
    failed: collections.Counter[int] = collections.Counter()  # submit answers other than 201, by status

    async def producer(limit: int | None, until: float | None) -> None:
        while (limit is None or produced[0] < limit) and (until is None or time.perf_counter() < until):
            produced[0] += 100
            status, _ = await load.post("/jobs/batch", {"jobs": [job_body("s6", i) for i in range(100)]})
            if status != 201:  # not (known to be) submitted: another batch makes up for it
                produced[0] -= 100
                failed[status] += 1
                await asyncio.sleep(0.1)
    started = time.perf_counter()
    await asyncio.gather(*[producer(through, None) for _ in range(8)])
    while sum(acked) < through and time.perf_counter() - started < 1800:
        await asyncio.sleep(0.5)
    after_through = sample()
    after_through_s = time.perf_counter() - started
    samples = []
    soak_end = time.perf_counter() + soak_s
    rate_limit = asyncio.ensure_future(asyncio.gather(*[producer(None, soak_end) for _ in range(2)]))
    while time.perf_counter() < soak_end:
        await asyncio.sleep(min(30.0, max(1.0, soak_s / 10)))
        samples.append(sample())
    await rate_limit
    stop.set()
    await asyncio.gather(*tasks)

    def spread(key: str) -> list[float]:
        out = []
        for node in range(cluster.size):
            values = [s[key][node] for s in samples[len(samples) // 2:]] or [float("nan")]
            mean = statistics.mean(values)
            out.append(round(100 * (max(values) - min(values)) / 2 / mean, 1) if mean else float("nan"))
        return out
    def trend(key: str) -> list[float]:
        """Least-squares growth over the second half of the soak, as % of the mean: a sawtooth between
        snapshots has a wide spread but no trend; a leak has a trend."""
        out = []
        for node in range(cluster.size):
            values = [s[key][node] for s in samples[len(samples) // 2:]]
            if len(values) < 2 or not statistics.mean(values):
                out.append(float("nan"))
                continue
            slope = statistics.linear_regression(range(len(values)), values).slope
            out.append(round(100 * slope * (len(values) - 1) / statistics.mean(values), 1))
        return out
    return {"scenario": "6 resources", "jobs_through": sum(acked), "through_seconds": round(after_through_s, 1),
            "submit_failures": {str(k): v for k, v in failed.items()},
            "after_through": after_through, "soak_seconds": soak_s, "soak_samples": samples,
            "soak_rss_spread_pct": spread("rss_mb"), "soak_disk_spread_pct": spread("disk_mb"),
            "soak_rss_trend_pct": trend("rss_mb"), "soak_disk_trend_pct": trend("disk_mb")}


async def scenario_live_rss(load: Load, cluster: LocalCluster | None, live: int) -> dict:
    if cluster is None:
        return {"scenario": "6 RSS with live jobs", "skipped": "needs a cluster this script started"}
    async def live_now() -> int:
        stats = await load.get("/stats?consistency=leader")
        return stats["total"] - sum(stats["by_state"].get(s, 0) for s in ("ACKED", "DEAD", "CANCELLED"))
    before = await live_now()  # earlier scenarios (5) may have left jobs queued: top up to `live`, no more
    await preload(load, "s6-live", max(0, live - before))
    await asyncio.sleep(2.0)
    count = await live_now()
    async with aiohttp.ClientSession() as session:  # the leader and the followers may differ (seen: by 450 MB)
        statuses = [await cluster.cluster_status(i, session) for i in range(cluster.size)]
    return {"scenario": f"6 RSS with {count:,} live jobs", "live_jobs": count,
            "roles": [s["role"] if s else "?" for s in statuses],
            "rss_mb": [round(node_rss_mb(n.pid), 1) for n in cluster.nodes],
            "peak_rss_mb": [round(node_rss_mb(n.pid, "VmHWM"), 1) for n in cluster.nodes]}


# ----- driver -------------------------------------------------------------------------------------------------
async def measured(make: Callable[[], Awaitable[dict]], tag: str, node_pids: list[int], seconds: float,
                   profiler_exe: str | None, profile_dir: Path | None) -> dict:
    """Runs one timed scenario and adds the CPU it cost per job (and, with --profile, where the nodes spent it)."""
    meter = CpuMeter(node_pids)
    profiler = None
    if profiler_exe and profile_dir:
        profiler = profile.NodeProfiler(profiler_exe, profile_dir, tag, node_pids, seconds)
    meter.start()
    row = await make()
    row["cpu"] = meter.stop(row.get("jobs", 0))
    if profiler is not None:
        row["profile"] = await asyncio.to_thread(profiler.finish)
    return row


async def stamped(work: Awaitable[dict]) -> dict:
    """The row of `work`, with the wall-clock times it started and ended (UTC), to match with the nodes' logs
    (snapshots, elections, slow ticks)."""
    started = time.time()
    row = await work
    row["started_at"], row["ended_at"] = _utc(started), _utc(time.time())
    return row


def _utc(seconds: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def render(row: dict) -> str:
    if "jobs_per_s" in row:
        text = (f"{row['scenario']:<32} {row['jobs_per_s']:>10,.0f} jobs/s   p50 {row['p50_ms']:>7.2f} ms   "
                f"p95 {row['p95_ms']:>7.2f} ms   p99 {row['p99_ms']:>7.2f} ms")
        if "e2e_p99_ms" in row:
            text += (f"   | submit p50 {row['submit_p50_ms']} p99 {row['submit_p99_ms']} ms; submit->ack p50 "
                     f"{row['e2e_p50_ms']} p99 {row['e2e_p99_ms']} ms")
        elif row.get("latency"):
            text += f"   ({row['latency']})"
        cpu = row.get("cpu")
        if cpu:
            nodes = (f"nodes {cpu['nodes_cpu_ms_per_job']} ms/job ({' / '.join(f'{p}%' for p in cpu['nodes_cpu_pct'])}"
                     " of a core), " if "nodes_cpu_pct" in cpu else "")
            text += (f"\n    cpu: {nodes}load generator {cpu['load_generator_cpu_ms_per_job']} ms/job "
                     f"({cpu['load_generator_cpu_pct']}%), machine {cpu['machine_busy_pct']}% busy of "
                     f"{100 * (os.cpu_count() or 1)}%")
        if "started_at" in row:
            text += f"\n    ran {row['started_at']}-{row['ended_at']} UTC"
        if row.get("profile"):
            text += "\n" + "\n".join(profile.render(row["profile"]))
        return text
    return f"{row['scenario']:<32} " + orjson.dumps({k: v for k, v in row.items() if k not in ('scenario',
                                                                                               'soak_samples')}).decode()


async def run(args: argparse.Namespace) -> int:
    cluster = None
    key = args.key or os.environ.get("RAFTQUEUE_KEY")
    if args.urls:
        urls = [u.rstrip("/") for u in args.urls.split(",")]
    else:
        data = Path(args.data_dir or tempfile.mkdtemp(prefix="raftqueue-bench-"))
        if data.exists() and any(data.iterdir()):
            # A cluster started on an earlier run's data carries its jobs, terms and snapshots: every figure
            # after that would be wrong (seen: 2M queued instead of 1M, and a 15 s start).
            print(f"--data-dir {data} is not empty: give an empty or new directory", file=sys.stderr)
            return 2
        data.mkdir(parents=True, exist_ok=True)
        disk = fsync_probe(data, 0.5 if args.quick else args.disk_probe)
        ports = free_ports(2 * args.nodes)
        extra = ["--log-level", args.node_log_level, "--retention", args.retention]
        cluster = LocalCluster(data, nodes=args.nodes, http_ports=ports[:args.nodes], raft_ports=ports[args.nodes:],
                               extra_args=extra)
        cluster.start_all()
        await cluster.wait_ready(timeout=60)
        urls = cluster.urls
        key = cluster.admin_key
    q = args.quick
    seconds = 2.0 if q else args.seconds
    node_pids = [node.pid for node in cluster.nodes] if cluster is not None else []
    profiler_exe = None
    if args.profile:
        profiler_exe = profile.available()
        if profiler_exe is None or not node_pids:
            if cluster is not None:
                cluster.stop_all()
            print("--profile needs py-spy (.venv/bin/pip install 'raftqueue[profile]') and a cluster this script "
                  "starts", file=sys.stderr)
            return 2
    rows: list[dict] = []
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}; "
          f"{'existing cluster ' + ','.join(urls) if args.urls else f'{args.nodes} local nodes, fsync on'}; "
          "load generator: this process", flush=True)
    if cluster is not None:
        print(f"disk: fdatasync of a 300-byte append in {data}, {disk['seconds']} s: p50 {disk['p50_ms']} ms, "
              f"p99.9 {disk['p999_ms']} ms, max {disk['max_ms']} ms, {disk['over_50ms']} of {disk['calls']:,} calls "
              f"over 50 ms; an fsync had over 10 ms to go {disk['stalled_pct']}% of the time (above 1%, no submit "
              "p99 of 10 ms is possible on this disk)", flush=True)
        rows.append({"scenario": "disk fdatasync probe", **disk})
    try:
        async with Load(urls, key) as load:
            if args.warmup > 0:
                await warm_up(load, 1.0 if q else args.warmup)
            timed = {1: lambda: scenario_submit(load, seconds),
                     2: lambda: scenario_lifecycle(load, seconds),
                     3: lambda: scenario_batched(load, seconds),
                     4: lambda: scenario_fixed_rate(load, seconds, rate=200 if q else 1000)}
            for scenario in args.scenarios:
                if scenario in timed:
                    rows.append(await stamped(measured(timed[scenario], f"scenario{scenario}", node_pids, seconds,
                                                       profiler_exe, Path(args.profile) if args.profile else None)))
                elif scenario == 5:
                    lengths = [100, 1000] if q else args.queued
                    for queued in lengths:
                        rows.append(await stamped(scenario_lease_ack_at(load, cluster, queued, seconds)))
                        print(render(rows[-1]), flush=True)
                    rows.append(await stamped(drain(load, [f"s5-{queued}" for queued in lengths])))
                elif scenario == 6:
                    rows.append(await stamped(scenario_resources(load, cluster, 2_000 if q else 1_000_000,
                                                                 3.0 if q else args.soak)))
                    print(render(rows[-1]), flush=True)
                    rows.append(await stamped(scenario_live_rss(load, cluster, 1_000 if q else 1_000_000)))
                print(render(rows[-1]), flush=True)
    finally:
        if cluster is not None:
            cluster.stop_all()
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"command": " ".join(sys.argv), "cores": os.cpu_count(),
                                                  "rows": rows}, option=orjson.OPT_INDENT_2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenarios", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each timed scenario")
    parser.add_argument("--queued", type=int, nargs="+", default=[1_000, 100_000, 1_000_000],
                        help="scenario 5 queue lengths")
    parser.add_argument("--disk-probe", type=float, default=20.0,
                        help="seconds of fdatasync probing before the cluster starts (stalls are minutes apart)")
    parser.add_argument("--soak", type=float, default=600.0, help="scenario 6 soak length in seconds")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--urls", default=None)
    parser.add_argument("--key", default=None, help="API key for --urls (default: RAFTQUEUE_KEY)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--retention", default="1m", help="node retention during the run (purge keeps disk flat)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--profile", default=None, metavar="DIR",
                        help="sample the nodes with py-spy during scenarios 1-4 and print where their GIL time went "
                             "(raw stacks kept in DIR)")
    parser.add_argument("--node-log-level", default="WARNING",
                        help="log level of the nodes this script starts (INFO shows snapshots and elections)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of unmeasured life cycles before the first "
                                                                    "scenario")
    from raftqueue.server import install_fast_loop
    install_fast_loop()
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
