"""The dashboard at `GET /`: one static HTML page (no build step) that reads the API with the user's key and
follows the cluster live over SSE. The page is open; everything it shows needs a key."""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

from aiohttp import web

from raftqueue.api.appkeys import CTX
from raftqueue.api.cors import member_origins

routes = web.RouteTableDef()


@lru_cache(maxsize=1)
def _page() -> bytes:
    return resources.files("raftqueue.api").joinpath("static/dashboard.html").read_bytes()


@routes.get("/")
async def dashboard(request: web.Request) -> web.Response:
    members = request.app[CTX].replica.members
    connect = " ".join(sorted(member_origins([m.http_addr for m in members])))
    headers = {
        "Content-Security-Policy": f"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                   f"img-src 'self' data:; connect-src 'self' {connect}; frame-ancestors 'none'",
        "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache",
    }
    return web.Response(body=_page(), content_type="text/html", charset="utf-8", headers=headers)
