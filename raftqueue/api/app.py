"""The aiohttp app factory: `create_app(settings, replica)`.

Routes live in `jobs.py` and `system.py`; this module wires them with the error middleware, the shared
`Context`, the SSE hub and the long-poll waiters, and the start/stop hooks. Later pieces (auth, metrics,
dashboard) plug in as middlewares and route tables here.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from raftqueue.api import batch_forward, jobs, system
from raftqueue.api.appkeys import CTX
from raftqueue.api.context import Context, Settings
from raftqueue.api.errors import ApiError, error_response
from raftqueue.api.events import EventHub
from raftqueue.api.longpoll import LeaseWaiters
from raftqueue.replica import Replica

log = logging.getLogger("raftqueue.api")

_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 408: "request_timeout", 413: "payload_too_large",
                 415: "unsupported_media_type", 429: "overloaded"}


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Every error is JSON `{"error": {code, message}}`; no stack trace ever reaches a client."""
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return error_response(404, "not_found", f"no route {request.method} {request.path}")
        if exc.status == 405:
            return error_response(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}")
        if exc.status == 413:
            return error_response(413, "payload_too_large", "the request body is too large")
        return error_response(exc.status, _STATUS_CODES.get(exc.status, "error"), exc.reason or "error")
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; the node log has the details")


def create_app(settings: Settings, replica: Replica, middlewares: list | None = None,
               debug_routes: bool = False) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes + 4096,
                          middlewares=[error_middleware, *(middlewares or [])])
    ctx = Context(settings, replica)
    app[CTX] = ctx
    waiters = LeaseWaiters(replica)
    hub = EventHub(replica)
    ctx.extras["lease_waiters"] = waiters
    ctx.extras["events"] = hub
    app.add_routes(jobs.routes)
    app.add_routes(system.routes)
    app.router.add_post(batch_forward.PATH, lambda request: batch_forward.handle_batch(request, ctx.batch_key))
    if debug_routes:
        from raftqueue.api import debug
        app.add_routes(debug.routes)
        ctx.extras.setdefault("cluster_flags", {})["debug_routes"] = True

    async def on_startup(app: web.Application) -> None:
        await ctx.forwarder.start()
        await ctx.batcher.start()
        waiters.attach()
        hub.attach()

    async def on_shutdown(app: web.Application) -> None:
        waiters.release_all()
        hub.close_all()

    async def on_cleanup(app: web.Application) -> None:
        await ctx.forwarder.close()
        await ctx.batcher.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
