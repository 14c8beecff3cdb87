"""Fault-injection routes for the chaos harness, mounted only with `raftqueue serve --debug-routes`.

POST /debug/clock {"offset_ms": N}         skew this node's clock (the leader stamps commands with it)
POST /debug/partition {"drop": [ids]}      drop all Raft traffic with these members (a partition inside the
                                           process, for machines where network namespaces are not possible)
Never enable these on a production cluster: they let a caller break the node on purpose.
"""
from __future__ import annotations

import orjson
from aiohttp import web

from raftqueue.api.appkeys import CTX
from raftqueue.api.errors import invalid
from raftqueue.api.validation import parse_json

routes = web.RouteTableDef()


@routes.post("/debug/clock")
async def clock(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = parse_json(await request.read())
    offset = body.get("offset_ms") if isinstance(body, dict) else None
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 10 ** 10:
        raise invalid("offset_ms", "must be an integer")
    ctx.replica.clock.offset_ms = offset
    return web.Response(body=orjson.dumps({"offset_ms": offset}), content_type="application/json")


@routes.post("/debug/partition")
async def partition(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = parse_json(await request.read())
    drop = body.get("drop") if isinstance(body, dict) else None
    members = {m.id: m.raft_addr for m in ctx.replica.members}
    if not isinstance(drop, list) or not all(isinstance(d, str) and d in members for d in drop):
        raise invalid("drop", f"must be a list of member ids ({', '.join(members)})")
    ctx.replica.node.blocked_peers = frozenset(members[d] for d in drop)
    return web.Response(body=orjson.dumps({"drop": sorted(drop)}), content_type="application/json")
