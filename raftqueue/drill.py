"""`raftqueue drill`: kill the leader with `kill -9`, N rounds, and measure what an HTTP client sees.

It starts its own local cluster (so it only ever signals processes it started). Background producers keep
submitting through every node, with idempotency keys, retrying like a careful client. Each round: kill the
leader, time until a probe client's submit through a survivor is answered 2xx (the failover as a user sees
it), restart the dead node, wait until it is ready again. At the end every answered submit is looked up:
`lost` must be 0.
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import random
import statistics
import sys
import tempfile
import time

import aiohttp
from rich.progress import Progress
import orjson

from raftqueue.localcluster import LocalCluster


class Drill:
    def __init__(self, cluster: LocalCluster, writers: int, seed: int) -> None:
        self.cluster = cluster
        self.writers = writers
        self.rng = random.Random(seed)
        self.answered: dict[str, str] = {}  # idempotency key -> job id
        self.unknown = 0
        self.stop = asyncio.Event()
        self.session: aiohttp.ClientSession | None = None

    async def _post(self, node: int, body: dict, timeout: float = 10.0) -> tuple[int | None, dict | None]:
        assert self.session is not None
        try:
            async with self.session.post(f"{self.cluster.urls[node]}/jobs", data=orjson.dumps(body),
                                         headers={"Content-Type": "application/json", **self.cluster.auth},
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                return resp.status, orjson.loads(await resp.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, orjson.JSONDecodeError):
            return None, None

    def _alive(self) -> list[int]:
        return [i for i, n in enumerate(self.cluster.nodes) if n.alive()]

    async def producer(self, name: str) -> None:
        for seq in itertools.count():
            if self.stop.is_set():
                return
            key = f"{name}-{seq}"
            for _ in range(100):
                status, body = await self._post(self.rng.choice(self._alive()),
                                                 {"payload": {"seq": seq}, "queue": "drill", "idempotency_key": key})
                if status in (200, 201) and body:
                    self.answered[key] = body["job_id"]
                    break
                await asyncio.sleep(0.05)
            else:
                self.unknown += 1
            await asyncio.sleep(0.01)

    async def failover_round(self, round_no: int) -> float:
        assert self.session is not None
        leader = await self.cluster.leader(self.session)
        survivor = self.rng.choice([i for i in self._alive() if i != leader])
        killed_at = time.monotonic()
        self.cluster.nodes[leader].kill()
        probe = 0
        while True:
            probe += 1
            status, body = await self._post(survivor, {"payload": {"probe": round_no}, "queue": "drill",
                                                       "idempotency_key": f"probe-{round_no}"}, timeout=5.0)
            if status in (200, 201) and body:
                elapsed = time.monotonic() - killed_at
                self.answered[f"probe-{round_no}"] = body["job_id"]
                break
            if time.monotonic() - killed_at > 30:
                raise TimeoutError(f"round {round_no}: no write succeeded 30 s after the leader died")
            await asyncio.sleep(0.005)
        self.cluster.nodes[leader].start()
        await self.cluster.wait_ready(timeout=60)
        return elapsed

    async def verify(self) -> tuple[int, int]:
        assert self.session is not None
        leader = await self.cluster.leader(self.session)
        present = 0
        for job_id in self.answered.values():
            async with self.session.get(f"{self.cluster.urls[leader]}/jobs/{job_id}", headers=self.cluster.auth) as resp:
                if resp.status == 200:
                    present += 1
        return present, len(self.answered) - present


async def run(args: argparse.Namespace) -> int:
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="raftqueue-drill-")
    cluster = LocalCluster(data_dir, nodes=args.nodes, base_port=args.base_port)
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cores; cluster: {args.nodes} nodes, data in {data_dir}")
    cluster.start_all()
    drill = Drill(cluster, args.writers, args.seed)
    try:
        await cluster.wait_ready(timeout=60)
        async with aiohttp.ClientSession() as session:
            drill.session = session
            producers = [asyncio.create_task(drill.producer(f"w{i}")) for i in range(args.writers)]
            await asyncio.sleep(1.0)
            times = []
            with Progress(disable=not sys.stderr.isatty(), transient=True) as progress:  # a bar on terminals only
                bar = progress.add_task("drill rounds", total=args.rounds)
                for round_no in range(1, args.rounds + 1):
                    elapsed = await drill.failover_round(round_no)
                    times.append(elapsed)
                    print(f"round {round_no:3d}: kill -9 leader -> first committed write {elapsed:.3f} s",
                          flush=True)  # rich keeps the bar below printed lines
                    progress.advance(bar)
                    await asyncio.sleep(args.pause)
            drill.stop.set()
            await asyncio.gather(*producers)
            present, lost = await drill.verify()
    finally:
        cluster.stop_all()
    print(f"failover seconds: median {statistics.median(times):.3f}  max {max(times):.3f}  "
          f"min {min(times):.3f}  over {len(times)} rounds")
    print(f"submitted (answered 2xx) {len(drill.answered)}  present {present}  lost {lost}  "
          f"gave up (never answered) {drill.unknown}")
    return 0 if lost == 0 else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=18081)
    parser.add_argument("--data-dir", default=None, help="default: a new temporary directory")
    parser.add_argument("--writers", type=int, default=4, help="background producers")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between rounds")
    parser.add_argument("--seed", type=int, default=1)


def main(args: argparse.Namespace) -> int:
    return asyncio.run(run(args))
