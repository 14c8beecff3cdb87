"""One Replica (no HTTP API) with a small control port: for replica benchmarks and Raft-level tests.

    python -m raftqueue.bench.replica_node --id n1 --data DIR --control-port P \
        --member n1=127.0.0.1:R1=http://127.0.0.1:X1 ... [--store module:Class] [--raft key=value ...]

Control port: POST /propose {"commands", "timeout"} -> {"index", "results"} | 503 {"error"};
POST /bench {"concurrency", "count", "payload_bytes"} runs proposals inside this process (the leader) and
answers throughput and latency; GET /status; GET /keys (KV test store only); POST /compact.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import signal
import sys
import time
from pathlib import Path

import orjson
from aiohttp import web

from raftqueue.replica import Member, ProposalError, Replica, ReplicaConfig


def parse_member(text: str) -> Member:
    node_id, raft_addr, http_addr = text.split("=", 2)
    return Member(node_id, raft_addr, http_addr)


def parse_value(text: str):
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def load_class(path: str | None):
    if not path:
        return None
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _json(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def run_bench(replica: Replica, concurrency: int, count: int, payload_bytes: int) -> dict:
    """`count` proposals of one submit command each, `concurrency` at a time, from inside the leader."""
    payload = orjson.dumps({"pad": "x" * max(0, payload_bytes - 10)}).decode()
    latencies: list[float] = []
    errors = 0
    next_no = iter(range(count))

    async def proposer() -> None:
        nonlocal errors
        for _ in next_no:
            started = time.perf_counter()
            try:
                await replica.propose([{"kind": "submit", "payload": payload, "queue": "bench"}], timeout=10)
            except ProposalError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
    started = time.perf_counter()
    await asyncio.gather(*[proposer() for _ in range(concurrency)])
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
    return {"concurrency": concurrency, "count": count, "ok": len(latencies), "errors": errors,
            "per_s": len(latencies) / elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99),
            "entries": replica.node.last_log_index if replica.node else None}


async def main(args: argparse.Namespace) -> None:
    raft = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.raft)}
    config = ReplicaConfig(node_id=args.id, members=[parse_member(m) for m in args.member],
                           data_dir=Path(args.data), secret=args.secret, insecure_raft=args.secret is None,
                           fsync=not args.no_fsync, raft=raft)
    replica = Replica(config, store_cls=load_class(args.store))
    await replica.start()

    async def propose(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        try:
            index, results = await replica.propose(body["commands"], timeout=body.get("timeout", 5.0))
        except ProposalError as exc:
            return _json({"error": exc.code, "message": str(exc)}, 503)
        return _json({"index": index, "results": results})

    async def bench(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        return _json(await run_bench(replica, body["concurrency"], body["count"], body.get("payload_bytes", 200)))

    async def status(request: web.Request) -> web.Response:
        return _json(await replica.status(with_digest=request.query.get("digest", "1") == "1"))

    async def keys(request: web.Request) -> web.Response:
        with replica.reading() as store:
            return _json(dict(store.data))

    async def compact(request: web.Request) -> web.Response:
        replica.force_compaction()
        return web.Response(text="ok")

    app = web.Application(client_max_size=64 << 20)
    app.add_routes([web.post("/propose", propose), web.post("/bench", bench), web.get("/status", status),
                    web.get("/keys", keys), web.post("/compact", compact)])
    for setup in EXTRA_ROUTES:
        setup(app, config, replica)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.control_port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("replica node ready", flush=True)
    await stop.wait()
    await runner.cleanup()
    await replica.close()


EXTRA_ROUTES: list = []  # test harnesses add fault-injection routes here


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--id", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--member", action="append", default=[])
    parser.add_argument("--store", default=None, help="module:Class of the state machine (default: JobStore)")
    parser.add_argument("--secret", default=None)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--raft", action="append", default=[], help="RaftSettings override key=value")
    return parser


def run(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(build_parser().parse_args(argv)))


if __name__ == "__main__":
    run()
