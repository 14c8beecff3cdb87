"""API key routes: create (admin), list all (admin), list own, revoke (own or admin). Lists never show secrets.

The secret of a new key is made on the leader, returned once in the 201 answer and never stored: the Raft
log and every replica hold only its salted hash.
"""
from __future__ import annotations

import asyncio
import logging

import orjson
from aiohttp import web

from raftqueue.api import validation as v
from raftqueue.api.appkeys import CTX
from raftqueue.api.auth import TYPE_SCOPES, TYPES, key_id_of, new_key, scopes_of
from raftqueue.api.errors import ApiError, invalid
from raftqueue.api.jobs import json_response
from raftqueue.timefmt import to_rfc3339

routes = web.RouteTableDef()
log = logging.getLogger("raftqueue.api.keys")
TOUCH_PATH = "/_internal/touch-keys"


def _public(record: dict) -> dict:
    out = dict(record)
    out["scopes"] = scopes_of(record.get("type"))  # what the key can do now
    for field in ("created_at", "revoked_at", "last_used_at"):
        out[field] = to_rfc3339(out.get(field))
    return out


@routes.post("/admin/keys")
async def create_key(request: web.Request) -> web.Response:
    ctx = request.app[CTX]

    def plan(body: bytes):
        data = v.obj(v.parse_json(body))
        v.reject_unknown(data, {"name", "owner_id", "type"})
        name = v.text(data, "name", "name", 256)
        owner = v.text(data, "owner_id", "owner_id", 256)
        key_type = data.get("type")
        if name is None or owner is None:
            raise invalid("name" if name is None else "owner_id", "is required")
        if key_type not in TYPES:
            raise invalid("type", f"must be one of {', '.join(TYPES)}")
        key_id, secret, salt, digest = new_key(key_type)
        command = {"kind": "create_key", "key_id": key_id, "name": name, "owner_id": owner, "type": key_type,
                   "scopes": TYPE_SCOPES[key_type], "salt": salt, "hash": digest}

        def render(index: int, results: list) -> web.Response:
            result = ctx.store_result(results[0])
            return json_response({"key": f"{key_type}_{key_id}_{secret}", **_public(result)}, 201)
        return [command], render
    return await ctx.write(request, plan)


@routes.get("/admin/keys")
async def list_all_keys(request: web.Request) -> web.Response:
    ctx = request.app[CTX]

    def local() -> web.Response:
        with ctx.replica.reading() as store:
            return json_response([_public(k) for k in store.keys.list()])
    return await ctx.read(request, local, default="stale")


@routes.get("/keys")
async def list_own_keys(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    owner = request["identity"].owner_id

    def local() -> web.Response:
        with ctx.replica.reading() as store:
            return json_response([_public(k) for k in store.keys.list(owner)])
    return await ctx.read(request, local, default="stale")


@routes.delete("/keys/{key_id}")
async def revoke_key(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    identity = request["identity"]
    key_id = key_id_of(request.match_info["key_id"])
    if len(key_id) > 64:
        raise ApiError(404, "not_found", "no such key")

    def plan(body: bytes):
        if identity.is_admin:
            command = {"kind": "revoke_key", "key_id": key_id, "owner_id": None}
        else:
            command = {"kind": "revoke_own_key", "key_id": key_id, "owner_id": identity.owner_id}

        def render(index: int, results: list) -> web.Response:
            result = ctx.store_result(results[0])
            # "key": what the caller named, as the seed answers (its clients pass the whole key)
            return json_response({"message": "Key revoked successfully", "key": request.match_info["key_id"],
                                  "key_id": result["key_id"], "revoked_at": to_rfc3339(result["revoked_at"])})
        return [command], render
    return await ctx.write(request, plan)


@routes.post(TOUCH_PATH)
async def touch_keys(request: web.Request) -> web.Response:
    """Record when keys were last used; only nodes may call it (a verified forward or the node itself)."""
    if not (request.get("forwarded") or request.get("internal")):
        raise ApiError(404, "not_found", f"no route {request.method} {request.path}")
    return await request.app[CTX].write(request, _touch_plan)


def _touch_plan(body: bytes):
    used = v.parse_json(body)
    if not isinstance(used, dict) or not all(isinstance(k, str) and len(k) <= 64 and type(t) is int
                                             for k, t in used.items()):
        raise invalid("used", "must map key ids to times in ms")
    return [{"kind": "touch_keys", "used": used}], lambda index, results: json_response(results[0])


async def flush_key_uses(app: web.Application, interval_s: float = 60.0) -> None:
    """Every `interval_s`, propose (through the leader) the minute each key was last used on this node."""
    from raftqueue.api.batch_forward import InternalRequest
    ctx = app[CTX]
    authenticator = ctx.extras.get("authenticator")
    if authenticator is None:
        return
    while True:
        await asyncio.sleep(interval_s)
        used = authenticator.take_used()
        if not used:
            continue
        body = orjson.dumps(used)
        request = InternalRequest(app, "POST", TOUCH_PATH, {}, body, None)
        request["internal"] = True
        try:
            await ctx.write(request, _touch_plan, body)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - usage times are best effort; the next minute retries
            log.debug("could not record key uses: %s", exc)
            for key_id, ms in used.items():
                authenticator.used.setdefault(key_id, ms)
