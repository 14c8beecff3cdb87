"""The aiohttp app factory: `create_app(settings, replica)`.

Routes live in `jobs.py` and `system.py`; this module wires them with the error middleware, the shared
`Context`, the SSE hub and the long-poll waiters, and the start/stop hooks. Later pieces (auth, metrics,
dashboard) plug in as middlewares and route tables here.
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from raftqueue.api import auth, batch_forward, cors, dashboard, jobs, keys, membership, removal_watch, system
from raftqueue.api.appkeys import CTX
from raftqueue.api.context import Context, Settings
from raftqueue.api.errors import ApiError, error_response
from raftqueue.api.events import EventHub
from raftqueue.api.forward import ForwardBroken, ForwardNotSent
from raftqueue.api.lease_gate import LeaseGate
from raftqueue.api.longpoll import LeaseWaiters
from raftqueue.api.metrics import METRICS, Metrics, handle_metrics
from raftqueue.replica import Replica

log = logging.getLogger("raftqueue.api")
KEY_CATCH_UP_S = 1.0  # how long a follower waits to apply a key it does not know before passing the request on
UNKNOWN_KEY_FORWARD_S = 45.0  # a request passed on for its key: a long poll's 30 s at most, and the commit

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


TOUCH_TASK = web.AppKey("touch_task", asyncio.Task)
REMOVAL_TASK = web.AppKey("removal_task", asyncio.Task)


def auth_middleware(ctx: Context, authenticator: auth.Authenticator | None):
    """Scope check on every route (api/auth.py); `authenticator` None means --no-auth."""
    @web.middleware
    async def middleware(request: web.Request, handler):
        resource = request.match_info.route.resource
        if resource is None:  # 404 / 405: let the router answer
            return await handler(request)
        method = "GET" if request.method == "HEAD" else request.method
        scope = auth.ROUTE_SCOPES.get((method, resource.canonical), "cluster:admin")
        if scope == "metrics:read" and ctx.settings.metrics_open:
            scope = auth.OPEN
        if scope == auth.OPEN:
            return await handler(request)
        if authenticator is None:
            request["identity"] = auth.DEV_IDENTITY
            return await handler(request)
        token = auth.bearer(request)
        if token is None and resource.canonical == "/events":
            token = request.query.get("token")  # EventSource cannot send headers; never logged
        if token is None:
            raise ApiError(401, "unauthorized", "send an API key: Authorization: Bearer <key>", auth.CHALLENGE)
        identity = authenticator.authenticate(token)
        replica = ctx.replica
        if identity is auth.UNKNOWN_KEY and not replica.is_leader and not request.get("forwarded"):
            # A key made a moment ago may not have reached this node: first catch up with what the leader last
            # said it committed (at once when caught up already), so the request can run here.
            await replica.wait_applied(replica.known_commit_index, KEY_CATCH_UP_S)
            identity = authenticator.authenticate(token)
            leader = replica.leader
            if identity is auth.UNKNOWN_KEY and leader is not None and resource.canonical != "/events":
                body = await ctx.body(request)  # still unknown here: the leader decides
                try:
                    # in an exchange of its own: a long poll would hold a whole forward batch for its wait_ms
                    return await ctx.batcher.forward_alone(request, body, leader, UNKNOWN_KEY_FORWARD_S)
                except (ForwardNotSent, ForwardBroken):
                    pass
        request["identity"] = identity = auth.check_identity(identity, scope)
        authenticator.note_use(identity, ctx.replica.clock.now_ms())
        return await handler(request)
    return middleware


def create_app(settings: Settings, replica: Replica, middlewares: list | None = None,
               debug_routes: bool = False, admin_key: str | None = None, no_auth: bool = False) -> web.Application:
    ctx = Context(settings, replica)
    authenticator = None
    if not no_auth:
        def read_key(key_id: str):
            with replica.reading() as store:
                return store.keys.get(key_id)
        authenticator = auth.Authenticator(admin_key, read_key)
    metrics = Metrics(replica, settings.node_id)
    metrics.forwarders = [ctx.batcher]
    origins = cors.MemberOrigins(lambda: [m.http_addr for m in replica.members])
    preflight = cors.preflight_middleware(origins)
    app = web.Application(client_max_size=settings.max_body_bytes + 4096,
                          middlewares=[metrics.middleware(), error_middleware, preflight,
                                       auth_middleware(ctx, authenticator), *(middlewares or [])])
    cors.add_headers(app, origins)
    app[CTX] = ctx
    app[METRICS] = metrics
    ctx.extras["authenticator"] = authenticator
    ctx.extras.setdefault("cluster_flags", {})["auth"] = "DISABLED (--no-auth)" if no_auth else "api-keys"
    waiters = LeaseWaiters(replica)
    hub = EventHub(replica)
    ctx.extras["lease_waiters"] = waiters
    ctx.extras["lease_gate"] = metrics.lease_gate = LeaseGate(replica)
    ctx.extras["events"] = hub
    metrics.events_hub = hub
    app.add_routes(jobs.routes)
    app.add_routes(system.routes)
    app.add_routes(membership.routes)
    app.add_routes(keys.routes)
    app.router.add_get("/metrics", handle_metrics)
    app.add_routes(dashboard.routes)
    ctx.authenticator = authenticator
    app.router.add_post(batch_forward.PATH,
                        lambda request: batch_forward.handle_batch(request, ctx.batch_key, ctx.propose_forwarded))
    if debug_routes:
        from raftqueue.api import debug
        app.add_routes(debug.routes)
        ctx.extras.setdefault("cluster_flags", {})["debug_routes"] = True

    async def on_startup(app: web.Application) -> None:
        ctx.start_peer_session()
        await ctx.batcher.start()
        waiters.attach()
        hub.attach()
        metrics.attach()
        app[TOUCH_TASK] = asyncio.ensure_future(keys.flush_key_uses(app, settings.key_touch_interval_s))
        app[REMOVAL_TASK] = asyncio.ensure_future(removal_watch.watch(ctx, admin_key))

    async def on_shutdown(app: web.Application) -> None:
        metrics.detach()
        waiters.release_all()
        hub.close_all()

    async def on_cleanup(app: web.Application) -> None:
        app[TOUCH_TASK].cancel()
        app[REMOVAL_TASK].cancel()
        await ctx.close_peer_session()
        await ctx.batcher.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
