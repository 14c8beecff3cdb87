"""Observability and cluster routes: /health, /live, /ready, /stats, /events, /cluster."""
from __future__ import annotations

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


@routes.get("/cluster")
async def cluster(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    status = ctx.replica.status(with_digest=request.query.get("digest", "1") != "0")
    status["version"] = __version__
    status["forwarding"] = {"batches": ctx.batcher.batches_sent, "requests": ctx.batcher.items_sent}
    status.update(ctx.extras.get("cluster_flags", {}))
    return _json(status)
