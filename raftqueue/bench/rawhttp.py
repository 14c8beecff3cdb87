"""A lean keep-alive HTTP/1.1 client for the load generator (what wrk is to curl).

The load generator shares the 2 cores with the three nodes it measures. aiohttp's client spends ~150 us of
Python per request (its request/response objects, cookie jar, tracing hooks, stream readers); this one
writes one pre-built header block and parses the status line and Content-Length of the answer, so more of
the machine goes to the nodes. It speaks only what the bench needs: requests with a body or none, answers
with a Content-Length (every raftqueue route but SSE), one request at a time per connection, no redirects.
"""
from __future__ import annotations

import asyncio
import collections
from urllib.parse import urlsplit


class HTTPFailed(Exception):
    """The connection failed or closed before a whole answer came (the scenario counts the request as not done)."""


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "buffer", "waiter", "closed")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None:
            self._answer()

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(HTTPFailed(f"connection closed: {exc}"))

    def _answer(self) -> None:
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:
            self.waiter.set_exception(HTTPFailed("answer without Content-Length"))
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:line_end if line_end > 0 else len(head)])
        total = end + 4 + length
        if len(buffer) < total:
            return
        body = bytes(buffer[end + 4:total])
        del buffer[:total]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((int(head[9:12]), body))


class RawHTTP:
    """Keep-alive connections per base URL; `request` returns (status, body bytes) or raises HTTPFailed."""

    def __init__(self, headers: dict[str, str], timeout_s: float = 60.0) -> None:
        self._extra = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
        self._timeout = timeout_s
        self._idle: dict[str, collections.deque[_Connection]] = collections.defaultdict(collections.deque)
        self._all: list[_Connection] = []

    async def _connect(self, base: str) -> _Connection:
        parts = urlsplit(base)
        loop = asyncio.get_running_loop()
        ssl = True if parts.scheme == "https" else None
        _, conn = await loop.create_connection(_Connection, parts.hostname, parts.port or 80, ssl=ssl)
        self._all.append(conn)
        return conn

    async def request(self, method: str, base: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        idle = self._idle[base]
        conn = None
        while idle:
            candidate = idle.pop()
            if not candidate.closed:
                conn = candidate
                break
        try:
            if conn is None:
                conn = await self._connect(base)
        except OSError as exc:
            raise HTTPFailed(str(exc)) from None
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        conn.waiter = waiter
        host = base.split("://", 1)[-1]
        head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body) if body else 0}\r\n"
                .encode() + self._extra + b"\r\n")
        conn.transport.write(head + body if body else head)
        timer = loop.call_later(self._timeout, _expire, waiter)
        try:
            status, data = await waiter
        except HTTPFailed:
            conn.transport.close()
            raise
        finally:
            timer.cancel()
        idle.append(conn)
        return status, data

    async def close(self) -> None:
        for conn in self._all:
            if not conn.closed and conn.transport is not None:
                conn.transport.close()
        self._all.clear()
        self._idle.clear()


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(HTTPFailed("no answer within the timeout"))
