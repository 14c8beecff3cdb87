"""Cross-origin access between the cluster's own nodes, so the dashboard served by one node can follow the
cluster when that node dies (it switches to another member's URL). Only the members' own origins are allowed;
the credentials are the API key the page sends, never cookies."""
from __future__ import annotations

from typing import Callable
from urllib.parse import urlsplit

from aiohttp import web

_ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID, X-Request-Id"
_EXPOSE_HEADERS = "X-Raft-Index, X-Raft-Leader"


def member_origins(http_addrs: list[str]) -> frozenset[str]:
    origins = set()
    for addr in http_addrs:
        parts = urlsplit(addr)
        if not parts.scheme or not parts.netloc:
            continue
        origins.add(f"{parts.scheme}://{parts.netloc}")
        host, _, port = parts.netloc.rpartition(":")
        for alias_from, alias_to in (("127.0.0.1", "localhost"), ("localhost", "127.0.0.1")):
            if host == alias_from:
                origins.add(f"{parts.scheme}://{alias_to}:{port}")
    return frozenset(origins)


class MemberOrigins:
    """The current members' origins; members change at run time (POST/DELETE /cluster/members)."""

    def __init__(self, http_addrs: Callable[[], list[str]]) -> None:
        self._http_addrs = http_addrs
        self._cached: tuple[tuple[str, ...], frozenset[str]] = ((), frozenset())

    def __call__(self) -> frozenset[str]:
        addrs = tuple(self._http_addrs())
        if addrs != self._cached[0]:
            self._cached = (addrs, member_origins(list(addrs)))
        return self._cached[1]


def add_headers(app: web.Application, origins: Callable[[], frozenset[str]]) -> None:
    """Add CORS headers to every answer to a member origin, streamed ones (SSE) included."""
    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is not None and origin in origins():
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = _EXPOSE_HEADERS
            response.headers.add("Vary", "Origin")
    app.on_response_prepare.append(on_prepare)


def preflight_middleware(origins: Callable[[], frozenset[str]]):
    """Answer CORS preflights from member origins before auth (a preflight carries no key)."""
    @web.middleware
    async def preflight(request: web.Request, handler):
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if request.headers.get("Origin") not in origins():
                return web.Response(status=403, text="origin not allowed")
            return web.Response(status=204, headers={"Access-Control-Allow-Methods": "GET, POST, DELETE",
                                                     "Access-Control-Allow-Headers": _ALLOW_HEADERS,
                                                     "Access-Control-Max-Age": "600"})
        return await handler(request)
    return preflight
