"""Parked lease requests (POST /jobs/lease with wait_ms), on the leader and on followers alike.

A parked request waits on a future kept per queue in arrival order. Applied entries that make jobs READY
wake as many waiters of that queue as jobs became ready, oldest first, so waiting workers are served fairly.
Every replica applies the same entries, so a follower's waiters wake on the same events and then ask the
leader for the lease (api/jobs.py). A change of role releases everyone at once: each looks again as what
the node now is. Every wait is also capped at one second, after which the waiter re-checks `has_runnable`:
a missed wake-up costs a second, not a job.
"""
from __future__ import annotations

import asyncio
import collections

from raftqueue.replica import Replica

READY = "READY"
MAX_PARK_S = 1.0


class LeaseWaiters:
    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self._by_queue: dict[str, collections.deque[asyncio.Future]] = collections.defaultdict(collections.deque)
        self.parked = 0

    def attach(self) -> None:
        self._replica.add_listener(self.on_applied)
        self._replica.add_role_listener(lambda role: self.release_all())
        self._replica.add_restore_listener(lambda index: self.release_all())

    def runnable(self, queues: list[str]) -> bool:
        now = self._replica.clock.now_ms()
        with self._replica.reading() as store:
            return store.has_runnable(queues, now)

    async def wait(self, queues: list[str], timeout: float) -> None:
        future = asyncio.get_running_loop().create_future()
        for queue in queues:
            self._by_queue[queue].append(future)
        self.parked += 1
        try:
            await asyncio.wait_for(future, min(timeout, MAX_PARK_S))
        except asyncio.TimeoutError:
            pass
        finally:
            self.parked -= 1
            if not future.done():
                future.cancel()

    def on_applied(self, index: int, events: list) -> None:
        if not events or not self._by_queue:
            return
        ready: collections.Counter = collections.Counter()
        for _kind, _job_id, state, queue in events:
            if state == READY:
                ready[queue] += 1
        for queue, count in ready.items():
            self._wake(queue, count)

    def pass_on(self, queues: list[str]) -> None:
        """Wake the next waiter of each queue: a woken request whose client had gone leased nothing."""
        for queue in queues:
            self._wake(queue, 1)

    def wake_queue(self, queue: str) -> None:
        self._wake(queue, 1 << 30)

    def _wake(self, queue: str, count: int) -> None:
        waiting = self._by_queue.get(queue)
        while waiting and count > 0:
            future = waiting.popleft()
            if not future.done():
                future.set_result(None)
                count -= 1
        if waiting is not None and not waiting:
            del self._by_queue[queue]

    def release_all(self) -> None:
        for waiting in self._by_queue.values():
            for future in waiting:
                if not future.done():
                    future.set_result(None)
        self._by_queue.clear()
