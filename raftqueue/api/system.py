"""Observability and cluster routes: /health, /live, /ready, /stats, /events, /cluster."""
from __future__ import annotations

import asyncio

import aiohttp
import orjson
from aiohttp import web

from raftqueue import __version__
from raftqueue.api.appkeys import CTX

routes = web.RouteTableDef()


def _json(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.Response(text="OK")  # seed compatibility: the process is up


@routes.get("/live")
async def live(request: web.Request) -> web.Response:
    return _json({"status": "live"})


@routes.get("/ready")
async def ready(request: web.Request) -> web.Response:
    replica = request.app[CTX].replica
    leader = replica.leader
    body = {"ready": replica.is_ready(), "role": replica.role, "leader": leader.id if leader else None,
            "applied_index": replica.applied_index}
    return _json(body, 200 if body["ready"] else 503)


@routes.get("/stats")
async def stats(request: web.Request) -> web.Response:
    ctx = request.app[CTX]

    def local() -> web.Response:
        with ctx.replica.reading() as store:
            return _json(store.stats())
    return await ctx.read(request, local, default="stale")


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    return await request.app[CTX].extras["events"].stream(request)


@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    from raftqueue.api.openapi import document
    return _json(document())


@routes.get("/cluster")
async def cluster(request: web.Request) -> web.Response:
    return _json(await _own_status(request, request.query.get("digest", "1") != "0"))


@routes.get("/cluster/nodes")
async def cluster_nodes(request: web.Request) -> web.Response:
    """Every member's /cluster, asked by this node (with the caller's key), so one URL shows the whole cluster;
    a member that does not answer is listed with an `error`."""
    ctx = request.app[CTX]
    own = await _own_status(request, True)
    headers = {"Authorization": request.headers["Authorization"]} if "Authorization" in request.headers else {}
    if not headers and request.query.get("token"):
        headers = {"Authorization": f"Bearer {request.query['token']}"}

    async def ask(member) -> dict:
        if member.id == ctx.settings.node_id:
            return own
        try:
            async with ctx.peer_session.get(f"{member.http_addr}/cluster", headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=2)) as resp:
                body = orjson.loads(await resp.read())
                if resp.status == 200:
                    return body
                return {"node_id": member.id, "http_addr": member.http_addr, "error": f"HTTP {resp.status}"}
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, orjson.JSONDecodeError) as exc:
            return {"node_id": member.id, "http_addr": member.http_addr,
                    "error": f"unreachable ({exc.__class__.__name__})"}
    members = ctx.replica.members
    if not any(m.id == ctx.settings.node_id for m in members):
        members.append(ctx.replica.config.self_member)  # removed, or not added yet: still shown
    nodes = await asyncio.gather(*[ask(m) for m in members])
    return _json({"asked_by": ctx.settings.node_id, "nodes": list(nodes)})


async def _own_status(request: web.Request, with_digest: bool) -> dict:
    ctx = request.app[CTX]
    status = await ctx.replica.status(with_digest=with_digest)
    status["version"] = __version__
    status["forwarding"] = {"batches": ctx.batcher.batches_sent, "requests": ctx.batcher.items_sent}
    status.update(ctx.extras.get("cluster_flags", {}))
    status["http_addr"] = ctx.replica.config.self_member.http_addr
    return status
