"""A process running one real Replica plus a tiny control API, for the Raft-level integration tests.

    python -m tests.support.raft_harness --id n1 --data DIR --control-port P \
        --member n1=127.0.0.1:R1=http://127.0.0.1:P1 ... [--store kv|jobs] [--raft key=value ...]

Control API: POST /propose {"commands": [...], "timeout": s} -> {"index", "results"} or {"error": code};
GET /status -> replica.status(); GET /get?key=K -> KV value; POST /compact.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
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


ISOLATED: dict[str, float] = {}  # raft address -> monotonic time until which traffic with it is dropped


def _isolated(node) -> bool:
    import time
    until = ISOLATED.get(getattr(node, "address", None))
    return until is not None and time.monotonic() < until


def install_isolation() -> None:
    """Drop every message to and from the peers listed in ISOLATED (a one-sided network cut)."""
    from raftqueue.raft.node import RaftNode
    from raftqueue.raft.transport import HardenedTransport

    original_send = HardenedTransport.send
    original_receive = RaftNode._SyncObj__onMessageReceived

    def send(self, node, message):
        if _isolated(node):
            return False
        return original_send(self, node, message)

    def receive(self, node, message):
        if _isolated(node):
            return None
        return original_receive(self, node, message)

    HardenedTransport.send = send
    RaftNode._SyncObj__onMessageReceived = receive


def install_faults(inject: list[str], disable: list[str], seed: int) -> None:
    """Test-only fault injection and fix switches, applied by patching classes inside this process only.

    dup_append=P   the leader re-sends, with probability P per send, an older append_entries it sent before
                   (a delayed duplicate: the pipelined-load race that made PySyncObj truncate applied entries)
    stale_reset=P  a follower also sends, with probability P, an old 'reset' next_node_idx answer
    disable=D2     route append_entries through PySyncObj's own handler (our §5.3 fix off)
    disable=D4     no pre-vote
    """
    import collections
    import random

    from pysyncobj import SyncObj

    from raftqueue.raft.node import RaftNode
    from raftqueue.raft.transport import HardenedTransport

    rng = random.Random(seed)
    faults = {k: float(v) for k, v in (item.split("=", 1) for item in inject)}
    if faults:
        history: dict = collections.defaultdict(lambda: collections.deque(maxlen=64))
        original_send = HardenedTransport.send

        def send(self, node, message):
            ok = original_send(self, node, message)
            if isinstance(message, dict):
                kind = message.get("type")
                if kind == "append_entries" and "prevLogIdx" in message and message.get("entries"):
                    past = history[node]
                    if past and rng.random() < faults.get("dup_append", 0):
                        original_send(self, node, past[rng.randrange(len(past))])
                    past.append(message)
                elif kind == "next_node_idx":
                    past = history[node]
                    if past and rng.random() < faults.get("stale_reset", 0):
                        stale = dict(past[rng.randrange(len(past))])
                        stale["reset"], stale["success"] = True, False
                        original_send(self, node, stale)
                    past.append(message)
            return ok

        HardenedTransport.send = send
    if "D2" in disable:
        def library_append(self, node, message):
            SyncObj._SyncObj__onMessageReceived(self, node, message)
        RaftNode._on_append_entries = library_append
    if "D4" in disable:
        RaftNode._maybe_prevote = lambda self: None


async def main(args: argparse.Namespace) -> None:
    install_faults(args.inject, args.disable, args.seed)
    install_isolation()
    store_cls = None
    if args.store == "kv":
        from tests.support.kvstore import KVStore
        store_cls = KVStore
    raft = dict(item.split("=", 1) for item in args.raft)
    config = ReplicaConfig(node_id=args.id, members=[parse_member(m) for m in args.member],
                           data_dir=Path(args.data), secret=args.secret, insecure_raft=args.secret is None,
                           fsync=not args.no_fsync, raft={k: parse_value(v) for k, v in raft.items()})
    replica = Replica(config, store_cls=store_cls)
    await replica.start()

    async def propose(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        try:
            index, results = await replica.propose(body["commands"], timeout=body.get("timeout", 5.0))
        except ProposalError as exc:
            return web.Response(body=orjson.dumps({"error": exc.code, "message": str(exc)}),
                                content_type="application/json", status=503)
        return web.Response(body=orjson.dumps({"index": index, "results": results}), content_type="application/json")

    async def status(request: web.Request) -> web.Response:
        digest = request.query.get("digest", "1") == "1"
        return web.Response(body=orjson.dumps(replica.status(with_digest=digest)), content_type="application/json")

    async def get(request: web.Request) -> web.Response:
        with replica.reading() as store:
            value = store.data.get(request.query["key"])
        return web.Response(body=orjson.dumps({"value": value}), content_type="application/json")

    async def keys(request: web.Request) -> web.Response:
        with replica.reading() as store:
            data = dict(store.data)
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    async def isolate(request: web.Request) -> web.Response:
        import time
        body = orjson.loads(await request.read())
        addrs = {m.id: m.raft_addr for m in config.members}
        for peer in body["peers"]:
            ISOLATED[addrs[peer]] = time.monotonic() + float(body["seconds"])
        return web.Response(text="ok")

    async def compact(request: web.Request) -> web.Response:
        replica.force_compaction()
        return web.Response(text="ok")

    app = web.Application()
    app.add_routes([web.post("/propose", propose), web.get("/status", status), web.get("/get", get),
                    web.get("/keys", keys), web.post("/compact", compact),
                    web.post("/isolate", isolate)])
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.control_port)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    print("harness ready", flush=True)
    await stop.wait()
    await runner.cleanup()
    await replica.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--member", action="append", default=[])
    parser.add_argument("--store", choices=["kv", "jobs"], default="kv")
    parser.add_argument("--secret", default=None)
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument("--raft", action="append", default=[])
    parser.add_argument("--inject", action="append", default=[])
    parser.add_argument("--disable", action="append", default=[])
    parser.add_argument("--seed", type=int, default=1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(main(parser.parse_args()))
