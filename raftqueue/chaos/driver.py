"""`raftqueue chaos`: a cluster, clients that record everything, faults on a seeded schedule, a verdict.

    raftqueue chaos --duration 60 --nodes 3 --seed 42            # its own cluster, every fault kind
    raftqueue chaos --faults kill,pause --duration 600

Phases: start the cluster (in network namespaces when root, else on 127.0.0.1 with in-process
partitions); run producers, workers and the fault schedule for --duration; heal every fault; drain the queue
(workers only ack); wait until every replica has the same digest; read the final state; check the history
(raftqueue.chaos.checker); print the report, ending with `result: OK` or `result: FAIL (...)`.
The history and final state are written to --out, so `python -m raftqueue.chaos.checker` can re-check them.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson

from raftqueue.chaos.checker import check
from raftqueue.chaos.faults import KINDS, Injector, make_schedule
from raftqueue.chaos.history import History
from raftqueue.chaos.network import LoopbackNetwork, NetnsNetwork
from raftqueue.chaos.workload import Clients
from raftqueue.localcluster import LocalCluster, free_ports

OPEN_STATES = ("SCHEDULED", "READY", "RUNNING", "RETRY")
_AUTH: dict[str, str] = {}  # the admin key of the cluster under test (set in run)


async def _get(session: aiohttp.ClientSession, url: str, **params) -> tuple[int, dict | None]:
    try:
        async with session.get(url, params=params, headers=_AUTH, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            return resp.status, orjson.loads(await resp.read())
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, orjson.JSONDecodeError):
        return 0, None


async def drain(cluster: LocalCluster, session: aiohttp.ClientSession, stall_timeout: float,
                max_seconds: float = 3600.0) -> dict:
    """Wait until no job is open. A backlog left by a long run takes as long as the workers need (up to
    `max_seconds`); it gives up early only when the open count has not fallen for `stall_timeout` seconds."""
    started = last_progress = time.monotonic()
    fewest = None
    stats: dict | None = None
    while True:
        leader = await cluster.leader(session, timeout=30)
        status, answer = await _get(session, f"{cluster.urls[leader]}/stats", consistency="leader")
        if status == 200 and answer:
            stats = answer
            open_jobs = sum(stats["by_state"][s] for s in OPEN_STATES)
            if open_jobs == 0:
                return stats
            if fewest is None or open_jobs < fewest:
                fewest, last_progress = open_jobs, time.monotonic()
        now = time.monotonic()
        if now - last_progress > stall_timeout or now - started > max_seconds:
            return stats or {}
        await asyncio.sleep(0.5)


async def converge(cluster: LocalCluster, session: aiohttp.ClientSession, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    nodes: list[dict] = []
    while time.monotonic() < deadline:
        nodes = []
        for i in range(cluster.size):
            status, body = await _get(session, f"{cluster.urls[i]}/cluster", digest="1")
            if status == 200 and body:
                nodes.append({"node_id": body["node_id"], "applied_index": body["applied_index"],
                              "commit_index": body["commit_index"], "state_digest": body["state_digest"]})
        if len(nodes) == cluster.size and len({(n["applied_index"], n["state_digest"]) for n in nodes}) == 1:
            return nodes
        await asyncio.sleep(0.25)
    return nodes


async def read_final(cluster: LocalCluster, session: aiohttp.ClientSession, history: History) -> dict:
    leader = await cluster.leader(session, timeout=30)
    base = cluster.urls[leader]
    jobs: dict[str, dict] = {}
    cursor = None
    while True:
        params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
        status, page = await _get(session, f"{base}/jobs", **params)
        if status != 200 or page is None:
            raise RuntimeError(f"listing jobs failed with {status}")
        for job in page["jobs"]:
            jobs[job["job_id"]] = job
        cursor = page["next_cursor"]
        if not cursor:
            break
    missing = []
    wanted = set()
    for op in history.ops:
        if op.kind == "submit" and op.outcome == "ok" and isinstance(op.result, dict):
            wanted.add(op.result["job_id"])
        elif op.kind == "submit_batch" and op.outcome == "ok" and isinstance(op.result, dict):
            wanted.update(op.result.get("job_ids", []))
    for job_id in sorted(wanted - set(jobs)):
        status, job = await _get(session, f"{base}/jobs/{job_id}")
        if status == 200 and job:
            jobs[job_id] = job
        else:
            missing.append(job_id)
    return {"jobs": jobs, "missing": missing}


async def run(args: argparse.Namespace) -> int:
    kinds = [k.strip() for k in args.faults.split(",") if k.strip()] if args.faults != "all" else list(KINDS)
    unknown = set(kinds) - set(KINDS)
    if unknown:
        print(f"raftqueue chaos: unknown fault kinds {sorted(unknown)}; choose from {', '.join(KINDS)}",
              file=sys.stderr)
        return 2
    use_netns = args.partitions == "netns" or (args.partitions == "auto" and NetnsNetwork.available())
    network = NetnsNetwork(args.nodes) if use_netns else LoopbackNetwork(args.nodes)
    out = Path(args.out or tempfile.mkdtemp(prefix=f"raftqueue-chaos-{args.seed}-"))
    out.mkdir(parents=True, exist_ok=True)
    schedule = make_schedule(args.seed, args.duration, kinds, args.fault_gap)
    header = {"seed": args.seed, "nodes": args.nodes, "duration_s": args.duration, "faults": kinds,
              "partition_mode": network.mode, "command": " ".join(sys.argv), "cores": os.cpu_count(),
              "schedule": [p.describe() for p in schedule]}
    print(f"chaos: seed {args.seed}, {args.nodes} nodes, {args.duration:.0f} s, partitions {network.mode}, "
          f"output in {out}", flush=True)
    for p in schedule:
        print(f"  planned t={p.t:6.2f}s  {p.fault:<17} {p.target:<8} hold {p.hold:.2f}s"
              + (f"  skew {p.skew_ms:+d} ms" if p.skew_ms else ""), flush=True)
    history = History(header)
    network.setup()
    if use_netns:
        http_ports, raft_ports = [8001] * args.nodes, [9001] * args.nodes
    else:
        ports = free_ports(2 * args.nodes)
        http_ports, raft_ports = ports[:args.nodes], ports[args.nodes:]
    cluster = LocalCluster(out / "cluster", nodes=args.nodes, http_ports=http_ports, raft_ports=raft_ports,
                           hosts=[network.host(i) for i in range(args.nodes)],
                           wrappers=[network.wrapper(i) for i in range(args.nodes)],
                           extra_args=["--debug-routes", "--lease", "5s", "--log-level", "WARNING"])
    code = 1
    _AUTH.update(cluster.auth)
    if isinstance(network, LoopbackNetwork):
        network.headers = cluster.auth
    try:
        cluster.start_all()
        await cluster.wait_ready(timeout=60)
        async with aiohttp.ClientSession() as session, \
                Clients(history, cluster.urls, cluster.ids, args.seed, request_timeout_s=args.request_timeout,
                        key=cluster.admin_key) as clients:
            injector = Injector(cluster, network, history, args.seed)
            injector.session = session
            producers = [asyncio.create_task(clients.producer(f"p{i}")) for i in range(args.producers)]
            workers = [asyncio.create_task(clients.worker(f"w{i}")) for i in range(args.workers)]
            started = time.monotonic()
            for planned in schedule:
                delay = planned.t - (time.monotonic() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
                print(f"  t={time.monotonic() - started:6.2f}s  fault {planned.fault} ({planned.target})", flush=True)
                await injector.run(planned)
            remaining = args.duration - (time.monotonic() - started)
            if remaining > 0:
                await asyncio.sleep(remaining)
            clients.stop_producing.set()
            await asyncio.gather(*producers)
            print("healing every fault and draining the queue ...", flush=True)
            await injector.heal_everything()
            clients.draining = True
            stats = await drain(cluster, session, args.drain_timeout)
            clients.stop_working.set()
            await asyncio.gather(*workers)
            print(f"drained: {stats.get('by_state')}", flush=True)
            nodes = await converge(cluster, session, 60)
            final = await read_final(cluster, session, history)
            final["nodes"] = nodes
            final["expected_nodes"] = args.nodes
        history.write(out / "history.jsonl")
        (out / "final.json").write_bytes(orjson.dumps(final))
        report = check(history, final)
        (out / "report.json").write_bytes(orjson.dumps(report.to_dict()))
        print(report.render(), flush=True)
        code = 0 if report.ok else 1
    finally:
        cluster.stop_all()
        network.teardown()
    return code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load and faults (default 60)")
    parser.add_argument("--nodes", type=int, default=3, choices=(3, 5))
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock (printed)")
    parser.add_argument("--faults", default="all", help=f"comma-separated: {', '.join(KINDS)} (default all)")
    parser.add_argument("--fault-gap", type=float, default=4.0, help="mean seconds between faults")
    parser.add_argument("--partitions", choices=("auto", "netns", "in-process"), default="auto",
                        help="network namespaces (needs root) or in-process message dropping")
    parser.add_argument("--producers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--request-timeout", type=float, default=6.0)
    parser.add_argument("--drain-timeout", type=float, default=120.0,
                        help="give up draining when the open job count has not fallen for this long (seconds)")
    parser.add_argument("--out", default=None, help="where history.jsonl, final.json and report.json go")


def main(args: argparse.Namespace) -> int:
    if args.seed is None:
        args.seed = int(time.time()) % 1_000_000
    return asyncio.run(run(args))
