"""Indexes over jobs, so that lease, expiry, promotion, listing and purge never scan all jobs.

Heaps use lazy deletion: an entry carries the job's `ver` at push time; any state change bumps `ver`, so an
entry whose `ver` no longer matches is stale and is dropped when it reaches the top. Index layout is never
part of snapshots or digests: only the jobs are, and `restore` rebuilds every index from them.
"""
from __future__ import annotations

import collections
import heapq
from typing import Iterator

from sortedcontainers import SortedList

from raftqueue.store.model import READY, Job


class _QueueReady:
    """One queue's READY jobs: a deque for entries that arrive in lease order (the usual case: new jobs at
    default priority), a heap for the rest. The next job is the smaller of the two fronts, so the common case
    costs O(1) instead of O(log n)."""

    __slots__ = ("run", "heap")

    def __init__(self) -> None:
        self.run: collections.deque = collections.deque()
        self.heap: list = []

    def push(self, entry: tuple) -> None:
        run = self.run
        if not run or entry >= run[-1]:
            run.append(entry)
        else:
            heapq.heappush(self.heap, entry)

    def __len__(self) -> int:
        return len(self.run) + len(self.heap)

    def entries(self) -> Iterator[tuple]:
        yield from self.run
        yield from self.heap


def _valid(entry: tuple, jobs: dict[str, Job]) -> bool:
    job = jobs.get(entry[3])
    return job is not None and job.ver == entry[4] and job.state == READY


class ReadyIndex:
    """READY jobs per queue, in lease order: priority (high first), run_at, created_at, id."""

    def __init__(self) -> None:
        self.heaps: dict[str, _QueueReady] = {}

    def push(self, job: Job) -> None:
        queue = self.heaps.get(job.queue)
        if queue is None:
            queue = self.heaps[job.queue] = _QueueReady()
        queue.push((-job.priority, job.run_at, job.created_at, job.id, job.ver))

    def top(self, queue: str, jobs: dict[str, Job]):
        """The first valid entry of `queue`, dropping stale ones; None if the queue has no READY job."""
        ready = self.heaps.get(queue)
        if ready is None:
            return None
        run, heap = ready.run, ready.heap
        while run and not _valid(run[0], jobs):
            run.popleft()
        while heap and not _valid(heap[0], jobs):
            heapq.heappop(heap)
        if run and (not heap or run[0] <= heap[0]):
            return run[0]
        return heap[0] if heap else None

    def peek(self, queue: str, jobs: dict[str, Job], scan: int = 64):
        """Like top() but changes nothing (safe from a reader); None when the first `scan` entries are stale."""
        ready = self.heaps.get(queue)
        if ready is None:
            return None
        front = next((e for e, _ in zip(ready.run, range(scan)) if _valid(e, jobs)), None)
        heap_front = ready.heap[0] if ready.heap and _valid(ready.heap[0], jobs) else None
        candidates = [e for e in (front, heap_front) if e is not None]
        return min(candidates) if candidates else None

    def pop(self, queue: str) -> None:
        """Remove the entry `top(queue)` just returned."""
        ready = self.heaps[queue]
        run, heap = ready.run, ready.heap
        if run and (not heap or run[0] <= heap[0]):
            run.popleft()
        else:
            heapq.heappop(heap)


class TimeIndex:
    """Jobs keyed by a time (run_at for promotion, lease_until for expiry).

    An entry goes stale when its job changes (an acked lease, a cancelled retry). `trim` drops stale entries
    from the top a bounded number at a time after every applied command, on every replica: without it a
    follower, which never asks for `first`, kept every lease it had ever applied (about 100 bytes each, a
    million after a million jobs), and a follower that became leader then dropped them all inside one
    housekeeping call, a Raft tick of 4.7 s. Trimming changes no job, so replicas stay equal whatever their
    heaps hold.
    """

    def __init__(self) -> None:
        self.heap: list = []

    def push(self, at: int, job: Job) -> None:
        heapq.heappush(self.heap, (at, job.id, job.ver))

    def trim(self, jobs: dict[str, Job], valid, budget: int) -> bool:
        """Drop up to `budget` stale entries from the top; True when the top is then a valid entry."""
        heap = self.heap
        while heap:
            entry = heap[0]
            job = jobs.get(entry[1])
            if job is not None and job.ver == entry[2] and valid(job):
                return True
            if budget <= 0:
                return False
            heapq.heappop(heap)
            budget -= 1
        return False

    def first(self, jobs: dict[str, Job], valid, budget: int = 4096) -> tuple | None:
        """The earliest valid entry; None when there is none, or none within `budget` stale ones (the next
        call, a tick later, goes on from there)."""
        return self.heap[0] if self.trim(jobs, valid, budget) else None

    def pop_due(self, now: int, jobs: dict[str, Job], valid) -> Iterator[Job]:
        """Yield (and remove) every valid job whose time is <= now, earliest first."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            at, job_id, ver = heapq.heappop(heap)
            job = jobs.get(job_id)
            if job is not None and job.ver == ver and valid(job):
                yield job


class ListingIndex:
    """(queue, state) -> jobs sorted by (created_at, id): newest-first pages in O(log n + limit).

    Moves are recorded and applied to the sorted lists in one pass (`settle`) before anything reads them, or
    every SETTLE_EVERY jobs. A job that goes READY -> RUNNING -> ACKED between two settles costs one sorted-list
    operation or two instead of five, and one created and purged in between costs none: under load the lists
    were a quarter of the store's apply time. The lists are not part of snapshots or digests."""

    SETTLE_EVERY = 4096

    def __init__(self) -> None:
        self._lists: dict[tuple[str, str], SortedList] = {}
        # job id -> [key it is filed under in _lists (or None), key it belongs under now (or None), sort key]
        self._moves: dict[str, list] = {}

    @property
    def lists(self) -> dict[tuple[str, str], SortedList]:
        self.settle()
        return self._lists

    def add(self, job: Job) -> None:
        move = self._moves.get(job.id)
        if move is None:
            self._record(job, None, (job.queue, job.state))
        else:
            move[1] = (job.queue, job.state)

    def remove(self, job: Job) -> None:
        move = self._moves.get(job.id)
        if move is None:
            self._record(job, (job.queue, job.state), None)
        else:
            move[1] = None

    def _record(self, job: Job, filed: tuple | None, now: tuple | None) -> None:
        self._moves[job.id] = [filed, now, (job.created_at, job.id)]
        if len(self._moves) >= self.SETTLE_EVERY:
            self.settle()

    def settle(self) -> None:
        moves, self._moves = self._moves, {}
        lists = self._lists
        for filed, now, key in moves.values():
            if filed == now:
                continue
            if filed is not None:
                lst = lists[filed]
                lst.remove(key)
                if not lst:
                    del lists[filed]
            if now is not None:
                lst = lists.get(now)
                if lst is None:
                    lst = lists[now] = SortedList()
                lst.add(key)

    def newest_first(self, queue: str | None, state: str | None, before: tuple | None) -> Iterator[tuple]:
        """(created_at, id) keys, newest first, strictly older than `before` when given."""
        self.settle()
        keys = sorted(k for k in self._lists if (queue is None or k[0] == queue) and (state is None or k[1] == state))
        iterators = []
        for key in keys:
            lst = self._lists[key]
            if before is None:
                iterators.append(reversed(lst))
            else:
                iterators.append(lst.irange(maximum=before, inclusive=(True, False), reverse=True))
        if len(iterators) == 1:
            return iterators[0]
        return heapq.merge(*iterators, reverse=True)
