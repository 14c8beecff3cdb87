"""Proxying requests from a follower to the leader over pooled keep-alive connections.

The body is passed on as the bytes the client sent (no JSON re-encoding), the leader's answer is returned as
it came. Whether a failed forward may be retried depends on how it failed: if no connection could be made,
nothing reached the leader; if the connection broke after the request was sent, the write may have been
applied, so the client gets 504 commit_timeout and retries with its idempotency key.
"""
from __future__ import annotations

import asyncio
import collections

import aiohttp
from aiohttp import web

from raftqueue.api.auth import forward_headers
from raftqueue.replica import Member

# Client headers passed to the leader. Our own X-Raftqueue-* headers are never taken from a client: a forward
# carries fresh, signed ones (api/auth.py).
_PASS_REQUEST = ("Content-Type", "Authorization", "X-Request-Id", "Last-Event-ID", "Accept")
_PASS_RESPONSE = ("Content-Type", "X-Raft-Index", "X-Raft-Leader", "Retry-After")


def error_reason(error: BaseException) -> str:
    """The `reason` label of raftqueue_forward_errors_total."""
    return "not_sent" if isinstance(error, ForwardNotSent) else "broken"


class ForwardNotSent(Exception):
    """The leader could not be reached at all: the request was not delivered; retrying is safe."""


class ForwardBroken(Exception):
    """The connection failed after the request may have been delivered: outcome unknown."""


class _InFlight:
    __slots__ = ("leader_id", "abandoned")

    def __init__(self, leader_id: str) -> None:
        self.leader_id = leader_id
        self.abandoned = False


class Forwarder:
    """Proxies to the leader. A forward is abandoned (answered 504, outcome unknown) as soon as this node
    sees another leader: a paused or cut-off old leader would otherwise hold the client until its timeout.
    One watcher task checks every in-flight forward, so a forward costs no extra task or timer."""

    WATCH_S = 0.05

    def __init__(self, node_id: str, timeout_s: float, current_leader=None, forward_key: bytes | None = None,
                 ssl=True) -> None:
        self._node_id = node_id
        self._ssl = ssl
        self._forward_key = forward_key
        self.errors: collections.Counter[str] = collections.Counter()  # by reason, for /metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=1.0)
        self._current_leader = current_leader  # callable -> Member | None
        self._session: aiohttp.ClientSession | None = None
        self._in_flight: dict[asyncio.Task, _InFlight] = {}
        self._watcher: asyncio.Task | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=512, keepalive_timeout=30, ttl_dns_cache=5,
                                         ssl=self._ssl)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout,
                                              auto_decompress=False, skip_auto_headers=("User-Agent",))
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    @property
    def session(self) -> aiohttp.ClientSession:
        """The pooled node-to-node session (also used to ask other members for their status)."""
        assert self._session is not None, "start() first"
        return self._session

    def _failed(self, error: Exception) -> Exception:
        self.errors[error_reason(error)] += 1
        return error

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        if self._session is not None:
            await self._session.close()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.WATCH_S)
            if not self._in_flight or self._current_leader is None:
                continue
            current = self._current_leader()
            current_id = current.id if current is not None else None
            for task, entry in list(self._in_flight.items()):
                if entry.leader_id != current_id and not entry.abandoned:
                    entry.abandoned = True
                    task.cancel()

    async def forward(self, request: web.Request, body: bytes, leader: Member,
                      timeout_s: float | None = None) -> web.Response:
        assert self._session is not None
        url = leader.http_addr.rstrip("/") + request.rel_url.path_qs
        headers = {name: request.headers[name] for name in _PASS_REQUEST if name in request.headers}
        headers.update(forward_headers(self._forward_key, self._node_id, request.method, request.rel_url.path_qs))
        timeout = self._timeout if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s, sock_connect=1.0)
        task = asyncio.current_task()
        entry = _InFlight(leader.id)
        if task is not None:
            self._in_flight[task] = entry
        try:
            async with self._session.request(request.method, url, data=body or None, headers=headers,
                                             timeout=timeout) as resp:
                data = await resp.read()
                out = {name: resp.headers[name] for name in _PASS_RESPONSE if name in resp.headers}
                return web.Response(status=resp.status, body=data, headers=out)
        except asyncio.CancelledError:
            if not entry.abandoned or task is None:
                raise
            task.uncancel()
            raise self._failed(ForwardBroken(f"the leader changed from {leader.id} while the request was in flight")
                               ) from None
        except aiohttp.ClientConnectorError as exc:
            raise self._failed(ForwardNotSent(str(exc))) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise self._failed(ForwardBroken(f"{type(exc).__name__}: {exc}")) from None
        finally:
            if task is not None:
                self._in_flight.pop(task, None)
