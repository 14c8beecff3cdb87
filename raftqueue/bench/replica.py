"""Replica benchmark: commit throughput and latency, and failover, without the HTTP API in the way.

    ./scripts/bench-replica [--rounds 20] [--stop-rounds 5]

Three `raftqueue.bench.replica_node` processes (the real JobStore, fsync on, an encrypted Raft transport)
on 127.0.0.1. Proposals (one submit of a 200-byte payload each) are made inside the leader process, one at a
time and 64 at a time. Failover: `kill -9` (and SIGSTOP) of the leader, then the time until a survivor commits
a proposal, measured from the benchmark process.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from raftqueue.localcluster import NodeProcess, free_ports


class ReplicaCluster:
    def __init__(self, root: Path, size: int = 3) -> None:
        ports = free_ports(3 * size)
        self.raft_ports, self.control = ports[:size], ports[size:2 * size]
        members = [f"n{i + 1}=127.0.0.1:{self.raft_ports[i]}=http://127.0.0.1:{ports[2 * size + i]}"
                   for i in range(size)]
        self.nodes = []
        for i in range(size):
            argv = [sys.executable, "-m", "raftqueue.bench.replica_node", "--id", f"n{i + 1}",
                    "--data", str(root / f"n{i + 1}"), "--control-port", str(self.control[i]), "--secret", "bench"]
            for m in members:
                argv += ["--member", m]
            self.nodes.append(NodeProcess(f"n{i + 1}", argv, root / f"n{i + 1}.log"))
        self.session: aiohttp.ClientSession | None = None

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.control[i]}"

    async def status(self, i: int) -> dict | None:
        try:
            async with self.session.get(f"{self.url(i)}/status", params={"digest": "0"},
                                        timeout=aiohttp.ClientTimeout(total=1)) as r:
                return orjson.loads(await r.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None

    async def leader(self, exclude: int | None = None, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, node in enumerate(self.nodes):
                if i == exclude or not node.alive():
                    continue
                st = await self.status(i)
                if st and st["role"] == "leader" and st["ready"]:
                    return i
            await asyncio.sleep(0.01)
        raise TimeoutError("no leader")

    async def all_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [await self.status(i) for i in range(len(self.nodes))]
            if all(s and s["ready"] for s in statuses):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("nodes not ready")

    async def propose_anywhere(self, survivors: list[int]) -> bool:
        body = orjson.dumps({"commands": [{"kind": "noop"}], "timeout": 1.0})
        for i in survivors:
            try:
                async with self.session.post(f"{self.url(i)}/propose", data=body,
                                             timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return True
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
        return False

    async def bench(self, leader: int, concurrency: int, count: int) -> dict:
        async with self.session.post(f"{self.url(leader)}/bench",
                                     data=orjson.dumps({"concurrency": concurrency, "count": count}),
                                     timeout=aiohttp.ClientTimeout(total=600)) as r:
            return orjson.loads(await r.read())


async def failover(cluster: ReplicaCluster, rounds: int, how: str) -> list[float]:
    times = []
    for round_no in range(1, rounds + 1):
        leader = await cluster.leader()
        survivors = [i for i in range(len(cluster.nodes)) if i != leader]
        started = time.monotonic()
        if how == "kill":
            cluster.nodes[leader].kill()
        else:
            cluster.nodes[leader].pause()
        while not await cluster.propose_anywhere(survivors):
            if time.monotonic() - started > 30:
                raise TimeoutError("no commit 30 s after the fault")
        elapsed = time.monotonic() - started
        times.append(elapsed)
        if how == "kill":
            cluster.nodes[leader].start()
        else:
            cluster.nodes[leader].resume()
        await cluster.all_ready()
        print(f"  round {round_no:2d}: {'kill -9' if how == 'kill' else 'SIGSTOP'} leader -> first commit on a "
              f"survivor {elapsed:.3f} s", flush=True)
        await asyncio.sleep(0.3)
    return times


async def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="raftqueue-bench-replica-"))
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {os.cpu_count()} cores; 3 replica processes, fsync on, Raft secret set; data in {root}")
    cluster = ReplicaCluster(root)
    for node in cluster.nodes:
        node.start()
    try:
        async with aiohttp.ClientSession() as session:
            cluster.session = session
            await cluster.all_ready()
            leader = await cluster.leader()
            for concurrency, count in ((1, args.count_single), (64, args.count_concurrent)):
                r = await cluster.bench(leader, concurrency, count)
                print(f"{concurrency:3d} proposer(s): {r['per_s']:,.0f} proposals/s  p50 {r['p50_ms']:.2f} ms  "
                      f"p99 {r['p99_ms']:.2f} ms  ({r['ok']} ok, {r['errors']} errors)", flush=True)
            kills = await failover(cluster, args.rounds, "kill")
            if kills:  # --rounds 0 / --stop-rounds 0 skip a phase
                print(f"kill -9 leader -> first commit: median {statistics.median(kills):.3f} s, "
                      f"max {max(kills):.3f} s over {len(kills)} rounds (goal: median <= 0.5 s, max <= 1.5 s)")
            stops = await failover(cluster, args.stop_rounds, "stop")
            if stops:
                print(f"SIGSTOP leader -> first commit: median {statistics.median(stops):.3f} s, "
                      f"max {max(stops):.3f} s over {len(stops)} rounds (goal <= 2 s)")
    finally:
        for node in cluster.nodes:
            node.kill()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--stop-rounds", type=int, default=5)
    parser.add_argument("--count-single", type=int, default=2000)
    parser.add_argument("--count-concurrent", type=int, default=40_000)
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
