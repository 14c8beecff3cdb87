"""raftqueue.bench.replica_node plus test-only fault injection, for the Raft-level integration tests.

    python -m tests.support.raft_harness <replica_node flags> [--inject dup_append=0.3] [--disable D2] ...

Adds POST /isolate {"peers": [ids], "seconds": s} to the node's control port.
"""
from __future__ import annotations

import sys

import orjson

from raftqueue.bench import replica_node


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


def _isolate_route(app, config, replica) -> None:
    import time

    from aiohttp import web

    async def isolate(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        addrs = {m.id: m.raft_addr for m in config.members}
        for peer in body["peers"]:
            ISOLATED[addrs[peer]] = time.monotonic() + float(body["seconds"])
        return web.Response(text="ok")
    app.add_routes([web.post("/isolate", isolate)])


if __name__ == "__main__":
    import asyncio
    import logging

    parser = replica_node.build_parser()
    parser.add_argument("--inject", action="append", default=[])
    parser.add_argument("--disable", action="append", default=[])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    install_faults(args.inject, args.disable, args.seed)
    install_isolation()
    replica_node.EXTRA_ROUTES.append(_isolate_route)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(replica_node.main(args))
