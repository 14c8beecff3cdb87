"""GET /events: Server-Sent Events of job changes and periodic stats, on every node.

Every node applies the same log, so every node can stream it: `id:` is the Raft index, so a client that
reconnects to another node with Last-Event-ID resumes where it stopped (from a ring of recent events; if it
is too far behind it gets `event: reset` and should refetch). Each subscriber has a bounded queue: one that
cannot keep up is disconnected, the server never buffers without limit for it.
"""
from __future__ import annotations

import asyncio
import collections
import logging

import orjson
from aiohttp import web

from raftqueue.replica import Replica

log = logging.getLogger("raftqueue.events")


class _Subscriber:
    __slots__ = ("queue", "dropped", "transport")

    def __init__(self, size: int, transport: asyncio.Transport | None) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(size)
        self.dropped = False
        self.transport = transport

    def drop(self) -> None:
        """Too slow to keep up: close its connection, so a client that stopped reading cannot pin the handler
        (blocked in a write) or any more memory. It reconnects with Last-Event-ID if it is still alive."""
        self.dropped = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()


class EventHub:
    def __init__(self, replica: Replica, ring_size: int = 10_000, queue_size: int = 2_000,
                 stats_every_s: float = 2.0) -> None:
        self._replica = replica
        self._ring: collections.deque[tuple[int, tuple]] = collections.deque(maxlen=ring_size)
        self._subscribers: set[_Subscriber] = set()
        self._queue_size = queue_size
        self._stats_every = stats_every_s
        self.dropped_total = 0

    def attach(self) -> None:
        self._replica.add_listener(self.on_applied)
        self._replica.add_restore_listener(self.on_restored)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @staticmethod
    def _format(index: int, event: tuple) -> bytes:
        kind, job_id, state, queue = event
        data = orjson.dumps({"kind": kind, "job_id": job_id, "state": state, "queue": queue})
        return b"id: %d\nevent: job\ndata: %s\n\n" % (index, data)

    def on_applied(self, index: int, events: list) -> None:
        ring = self._ring
        for event in events:  # kept raw: formatted only for someone listening (or replaying)
            ring.append((index, event))
        if self._subscribers:
            for event in events:
                self._publish(self._format(index, event))

    def on_restored(self, index: int) -> None:
        self._ring.clear()
        self._publish(b"id: %d\nevent: reset\ndata: {}\n\n" % index)

    def _publish(self, message: bytes) -> None:
        for sub in self._subscribers:
            if sub.dropped:
                continue
            try:
                sub.queue.put_nowait(message)
            except asyncio.QueueFull:
                sub.drop()
                self.dropped_total += 1

    def _stats_message(self) -> bytes:
        with self._replica.reading() as store:
            stats = store.stats()
        return b"event: stats\ndata: %s\n\n" % orjson.dumps(stats)

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        sub = _Subscriber(self._queue_size, request.transport)
        self._subscribers.add(sub)
        try:
            await response.write(b"retry: 1000\n\n" + self._stats_message())
            last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
            if last:
                await self._replay(response, last)
            loop = asyncio.get_running_loop()
            stats_at = loop.time() + self._stats_every  # every 2 s however busy the stream is (API.md)
            while not sub.dropped:
                wait = stats_at - loop.time()
                if wait <= 0:
                    message = self._stats_message()
                    stats_at = loop.time() + self._stats_every
                else:
                    try:
                        message = await asyncio.wait_for(sub.queue.get(), wait)
                    except asyncio.TimeoutError:
                        continue
                await response.write(message)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._subscribers.discard(sub)
        return response

    async def _replay(self, response: web.StreamResponse, last: str) -> None:
        try:
            after = int(last)
        except ValueError:
            return
        ring = self._ring
        if ring and ring[0][0] > after + 1 and after < self._replica.applied_index:
            await response.write(b"event: reset\ndata: {}\n\n")
            return
        for index, event in list(ring):
            if index > after:
                await response.write(self._format(index, event))

    def close_all(self) -> None:
        for sub in self._subscribers:
            sub.dropped = True
            try:
                sub.queue.put_nowait(b": closing\n\n")
            except asyncio.QueueFull:
                pass
