"""Forwarding many client requests to the leader in one internal HTTP exchange.

A follower proxies every write it receives. One HTTP request per client request costs the follower a client
request and the leader a server request each; under load that was a third of the cluster's CPU. So a
follower queues forwarded requests per leader and sends them in batches over `POST /_internal/forward`:
up to `MAX_IN_FLIGHT` batches at once, so a lone request goes out at once (no added latency) and batches
grow with load, like group commit. The leader handles the items of a batch concurrently, so their proposals
share Raft entries too.

Two kinds of item share a batch:
- a request: the leader runs it through the route table and middlewares like a request of its own (same
  validation, same auth, same answers). Used for reads, for requests with a key the follower does not know
  yet, and for writes whose plan reads state or has side effects.
- a planned write ("k": "p"): the follower has already parsed, validated and planned the write (the routes
  that mark their plan pure), and sends only the store commands and the client's key. The leader checks the
  key, stamps and proposes, and answers (index, results); the follower renders the response. A forwarded
  submit then costs the leader a proposal, not a whole request (routing, middlewares, parsing, rendering).

Frame (both ways): u32 length of a JSON header, the header, then the raw bodies back to back. Request items:
{"m": method, "p": path+query, "h": {header: value}, "n": body length}; response items:
{"s": status, "h": {header: value}, "n": body length}. Planned writes: {"k": "p", "r": [method, route],
"t": bearer token or null, "n": length of the JSON command list}; answers {"s": 200, "i": raft index,
"l": leader id, "n": length of the JSON results} or {"s": status, "e": code, "m": message, "h": headers,
"n": 0}, where "e": "retry" means the leader certainly did not apply it. Bodies are passed on as bytes.
The endpoint is authenticated with an HMAC of the frame under a key derived from the cluster secret; with no
secret (a loopback-only dev cluster) it accepts only requests from loopback addresses.
"""
from __future__ import annotations

import asyncio
import collections
import functools
import hashlib
import hmac
import struct
import time
from typing import Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from raftqueue.api.auth import bearer
from raftqueue.api.errors import ApiError
from raftqueue.api.forward import ForwardBroken, ForwardNotSent, error_reason
from raftqueue.replica import Member

PATH = "/_internal/forward"
AUTH_HEADER = "X-Raftqueue-Batch-Auth"
MAX_ITEMS = 256
MAX_BYTES = 8 * 1024 * 1024
MAX_IN_FLIGHT = 2
CLOCK_SLACK_S = 60
_U32 = struct.Struct("<I")
_PASS_REQUEST = ("Content-Type", "Authorization", "X-Request-Id", "Accept")
_PASS_RESPONSE = ("Content-Type", "X-Raft-Index", "X-Raft-Leader", "Retry-After")


def batch_key(secret: str | None) -> bytes | None:
    return hashlib.sha256(b"raftqueue-forward-batch:" + secret.encode()).digest() if secret else None


def encode_frame(items: list[dict], bodies: list[bytes]) -> bytes:
    head = orjson.dumps({"items": items})
    return b"".join([_U32.pack(len(head)), head, *bodies])


def decode_frame(data: bytes) -> list[tuple[dict, bytes]]:
    if len(data) < 4:
        raise ValueError("short frame")
    (head_len,) = _U32.unpack_from(data, 0)
    items = orjson.loads(data[4:4 + head_len])["items"]
    position = 4 + head_len
    out = []
    for item in items:
        n = int(item["n"])
        if n < 0 or position + n > len(data):
            raise ValueError("frame body out of range")
        out.append((item, data[position:position + n]))
        position += n
    return out


def sign(key: bytes | None, frame: bytes, now: float | None = None) -> str:
    stamp = str(int(now if now is not None else time.time()))
    if key is None:
        return stamp + "."
    return stamp + "." + hmac.new(key, stamp.encode() + b"." + frame, hashlib.sha256).hexdigest()


def verify(key: bytes | None, frame: bytes, header: str | None, remote: str | None) -> bool:
    if key is None:  # no cluster secret: only a loopback dev cluster may run like this
        return remote is not None and (remote.startswith("127.") or remote == "::1")
    if not header or "." not in header:
        return False
    stamp, _, mac = header.partition(".")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > CLOCK_SLACK_S:
        return False
    expected = hmac.new(key, stamp.encode() + b"." + frame, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, mac)


# ----- leader side -----------------------------------------------------------------------------------------------
class InternalRequest(dict):
    """What our handlers use of a web.Request, for one item of a forwarded batch."""

    def __init__(self, app: web.Application, method: str, path_qs: str, headers: dict, body: bytes,
                 remote: str | None) -> None:
        super().__init__()
        self.app = app
        self.method = method
        self.rel_url = URL(path_qs, encoded=True)  # as the client sent it: "%3F" stays in the segment
        self.path = self.rel_url.path
        self.headers = CIMultiDict(headers)
        self.query = self.rel_url.query
        self.remote = remote
        self.match_info = None
        self._body = body

    @property
    def content_length(self) -> int:
        return len(self._body)

    async def read(self) -> bytes:
        return self._body


PLANNED = "p"
ProposeForwarded = Callable[[dict, bytes], Awaitable[tuple[dict, bytes]]]


class LeaderRetry(Exception):
    """The leader answered that it certainly did not apply a planned write (it is no longer the leader)."""


async def handle_batch(request: web.Request, key: bytes | None, propose: ProposeForwarded) -> web.Response:
    frame = await request.read()
    if not verify(key, frame, request.headers.get(AUTH_HEADER), request.remote):
        return web.Response(status=401, text="bad batch signature")
    try:
        items = decode_frame(frame)
    except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
        return web.Response(status=400, text="bad batch frame")
    app = request.app

    async def run(item: dict, body: bytes) -> web.Response | tuple[dict, bytes]:
        if item.get("k") == PLANNED:
            return await propose(item, body)
        headers = {k: v for k, v in dict(item.get("h") or {}).items() if k in _PASS_REQUEST}
        sub = InternalRequest(app, str(item.get("m", "GET")), str(item.get("p", "/")), headers, body,
                              request.remote)
        sub["forwarded"] = True  # the batch's HMAC vouches for it
        match_info = await app.router.resolve(sub)
        sub.match_info = match_info
        handler = match_info.handler
        for middleware in reversed(app.middlewares):
            handler = functools.partial(middleware, handler=handler)
        return await handler(sub)

    responses = await asyncio.gather(*[run(item, body) for item, body in items], return_exceptions=True)
    out_items, bodies = [], []
    for response in responses:
        if isinstance(response, tuple):  # a planned write's answer
            meta, body = response
            meta["n"] = len(body)
            out_items.append(meta)
            bodies.append(body)
            continue
        if isinstance(response, BaseException) or not isinstance(response, web.Response):
            body = orjson.dumps({"error": {"code": "internal", "message": "internal error"}})
            out_items.append({"s": 500, "h": {"Content-Type": "application/json"}, "n": len(body)})
            bodies.append(body)
            continue
        body = response.body if isinstance(response.body, (bytes, bytearray)) else b""
        headers = {name: response.headers[name] for name in _PASS_RESPONSE if name in response.headers}
        out_items.append({"s": response.status, "h": headers, "n": len(body)})
        bodies.append(bytes(body))
    return web.Response(body=encode_frame(out_items, bodies), content_type="application/octet-stream")


# ----- follower side ---------------------------------------------------------------------------------------------
def _request_item(request: web.Request) -> dict:
    headers = {name: request.headers[name] for name in _PASS_REQUEST if name in request.headers}
    # raw: decoded, ".../members/n2%3Fx" would reach the leader as member n2 with a query
    return {"m": request.method, "p": request.rel_url.raw_path_qs, "h": headers}


class _Item:
    __slots__ = ("meta", "body", "future")

    def __init__(self, meta: dict, body: bytes, future: asyncio.Future) -> None:
        self.meta = meta
        self.body = body
        self.future = future


class BatchForwarder:
    def __init__(self, node_id: str, key: bytes | None, current_leader: Callable[[], Member | None],
                 timeout_s: float, ssl=True) -> None:
        self._node_id = node_id
        self._ssl = ssl
        self._key = key
        self.errors: collections.Counter[str] = collections.Counter()  # requests by reason, for /metrics
        self._current_leader = current_leader
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=1.0)
        self._queues: dict[str, collections.deque[_Item]] = collections.defaultdict(collections.deque)
        self._in_flight: dict[str, int] = collections.defaultdict(int)
        self._batches: dict[asyncio.Task, str] = {}
        self._session: aiohttp.ClientSession | None = None
        self._watcher: asyncio.Task | None = None
        self.batches_sent = 0
        self.items_sent = 0

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=64, keepalive_timeout=30, ttl_dns_cache=5,
                                         ssl=self._ssl)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=False,
                                              skip_auto_headers=("User-Agent",))
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        for task in list(self._batches):
            task.cancel()
        if self._session is not None:
            await self._session.close()

    async def forward(self, request: web.Request, body: bytes, leader: Member) -> web.Response:
        meta, answer = await self._enqueue(leader, _request_item(request), body)
        return web.Response(status=int(meta["s"]), body=answer, headers=dict(meta.get("h") or {}))

    async def forward_alone(self, request: web.Request, body: bytes, leader: Member, timeout_s: float) -> web.Response:
        """Like `forward`, in an exchange of its own with its own timeout: for a request that may take long (a
        node to add catching up with the log), whose batch-mates would otherwise wait for its answer."""
        meta = _request_item(request)
        meta["n"] = len(body)
        item = _Item(meta, body, asyncio.get_running_loop().create_future())
        # not counted in _in_flight: the batches' slots stay free for the writes meanwhile
        task = asyncio.get_running_loop().create_task(self._send(leader, [item], timeout_s, counted=False))
        self._batches[task] = leader.id
        meta, answer = await item.future
        return web.Response(status=int(meta["s"]), body=answer, headers=dict(meta.get("h") or {}))

    async def propose(self, request: web.Request, commands: list[dict], leader: Member) -> tuple[int, list, str]:
        """A planned write: (raft index, store results, leader id). ApiError for the leader's refusals,
        LeaderRetry when it certainly did not apply the commands."""
        route = request.match_info.route.resource
        item = {"k": PLANNED, "r": [request.method, route.canonical if route is not None else request.path],
                "t": bearer(request)}
        meta, answer = await self._enqueue(leader, item, orjson.dumps(commands))
        if meta.get("s") == 200:
            return int(meta["i"]), orjson.loads(answer), str(meta.get("l") or leader.id)
        if meta.get("e") == "retry":
            raise LeaderRetry(str(meta.get("m", "")))
        raise ApiError(int(meta.get("s", 500)), str(meta.get("e", "internal")), str(meta.get("m", "")),
                       dict(meta.get("h") or {}))

    async def _enqueue(self, leader: Member, meta: dict, body: bytes) -> tuple[dict, bytes]:
        meta["n"] = len(body)
        future = asyncio.get_running_loop().create_future()
        self._queues[leader.id].append(_Item(meta, body, future))
        self._kick(leader)
        return await future

    def _kick(self, leader: Member) -> None:
        queue = self._queues[leader.id]
        while queue and self._in_flight[leader.id] < MAX_IN_FLIGHT:
            batch: list[_Item] = []
            size = 0
            while queue and len(batch) < MAX_ITEMS and (not batch or size + len(queue[0].body) <= MAX_BYTES):
                item = queue.popleft()
                if item.future.done():  # the client went away before we sent it
                    continue
                batch.append(item)
                size += len(item.body)
            if not batch:
                return
            self._in_flight[leader.id] += 1
            task = asyncio.get_running_loop().create_task(self._send(leader, batch))
            self._batches[task] = leader.id

    async def _send(self, leader: Member, batch: list[_Item], timeout_s: float | None = None,
                    counted: bool = True) -> None:
        assert self._session is not None
        frame = encode_frame([item.meta for item in batch], [item.body for item in batch])
        headers = {AUTH_HEADER: sign(self._key, frame), "Content-Type": "application/octet-stream"}
        timeout = self._timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s, sock_connect=1.0)
        try:
            async with self._session.post(leader.http_addr.rstrip("/") + PATH, data=frame, headers=headers,
                                          timeout=timeout) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise ForwardBroken(f"the leader refused a forwarded batch ({resp.status})")
            answers = decode_frame(data)
            if len(answers) != len(batch):
                raise ValueError(f"{len(answers)} answers to {len(batch)} forwarded requests")
            for item, answer in zip(batch, answers):
                if not item.future.done():
                    item.future.set_result(answer)
            self.batches_sent += 1
            self.items_sent += len(batch)
        except asyncio.CancelledError:
            self._fail(batch, ForwardBroken(f"the leader changed from {leader.id} while requests were in flight"))
        except aiohttp.ClientConnectorError as exc:
            self._fail(batch, ForwardNotSent(str(exc)))
        except ForwardBroken as exc:
            self._fail(batch, exc)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError, orjson.JSONDecodeError) as exc:
            self._fail(batch, ForwardBroken(f"{type(exc).__name__}: {exc}"))
        finally:
            if counted:
                self._in_flight[leader.id] -= 1
            self._batches.pop(asyncio.current_task(), None)
            self._kick(leader)

    def _fail(self, batch: list[_Item], error: Exception) -> None:
        if isinstance(error, (ForwardNotSent, ForwardBroken)):
            self.errors[error_reason(error)] += len(batch)
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

    async def _watch(self) -> None:
        """Abandon batches sent to a node that is no longer the leader (it may be paused or cut off), and
        hand back requests still queued for it (never sent: the caller retries them with the new leader)."""
        while True:
            await asyncio.sleep(0.05)
            if not self._batches and not any(self._queues.values()):
                continue
            current = self._current_leader()
            current_id = current.id if current is not None else None
            for task, leader_id in list(self._batches.items()):
                if leader_id != current_id:
                    task.cancel()
            for leader_id, queue in self._queues.items():
                if leader_id != current_id and queue:
                    items = list(queue)
                    queue.clear()
                    self._fail(items, ForwardNotSent(f"{leader_id} stopped being the leader before sending"))
