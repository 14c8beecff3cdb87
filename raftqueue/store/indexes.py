"""Indexes over jobs, so that lease, expiry, promotion, listing and purge never scan all jobs.

Heaps use lazy deletion: an entry carries the job's `ver` at push time; any state change bumps `ver`, so an
entry whose `ver` no longer matches is stale and is dropped when it reaches the top. Index layout is never
part of snapshots or digests: only the jobs are, and `restore` rebuilds every index from them.
"""
from __future__ import annotations

import heapq
from typing import Iterator

from sortedcontainers import SortedList

from raftqueue.store.model import READY, Job


class ReadyIndex:
    """READY jobs per queue, in lease order: priority (high first), run_at, created_at, id."""

    def __init__(self) -> None:
        self.heaps: dict[str, list] = {}

    def push(self, job: Job) -> None:
        heap = self.heaps.get(job.queue)
        if heap is None:
            heap = self.heaps[job.queue] = []
        heapq.heappush(heap, (-job.priority, job.run_at, job.created_at, job.id, job.ver))

    def top(self, queue: str, jobs: dict[str, Job]):
        """The first valid entry of `queue`, dropping stale ones; None if the queue has no READY job."""
        heap = self.heaps.get(queue)
        while heap:
            entry = heap[0]
            job = jobs.get(entry[3])
            if job is not None and job.ver == entry[4] and job.state == READY:
                return entry
            heapq.heappop(heap)
        return None

    def pop(self, queue: str) -> None:
        heapq.heappop(self.heaps[queue])


class TimeIndex:
    """Jobs keyed by a time (run_at for promotion, lease_until for expiry)."""

    def __init__(self) -> None:
        self.heap: list = []

    def push(self, at: int, job: Job) -> None:
        heapq.heappush(self.heap, (at, job.id, job.ver))

    def first(self, jobs: dict[str, Job], valid) -> tuple | None:
        heap = self.heap
        while heap:
            entry = heap[0]
            job = jobs.get(entry[1])
            if job is not None and job.ver == entry[2] and valid(job):
                return entry
            heapq.heappop(heap)
        return None

    def pop_due(self, now: int, jobs: dict[str, Job], valid) -> Iterator[Job]:
        """Yield (and remove) every valid job whose time is <= now, earliest first."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            at, job_id, ver = heapq.heappop(heap)
            job = jobs.get(job_id)
            if job is not None and job.ver == ver and valid(job):
                yield job


class ListingIndex:
    """(queue, state) -> jobs sorted by (created_at, id): newest-first pages in O(log n + limit)."""

    def __init__(self) -> None:
        self.lists: dict[tuple[str, str], SortedList] = {}

    def add(self, job: Job) -> None:
        key = (job.queue, job.state)
        lst = self.lists.get(key)
        if lst is None:
            lst = self.lists[key] = SortedList()
        lst.add((job.created_at, job.id))

    def remove(self, job: Job) -> None:
        key = (job.queue, job.state)
        lst = self.lists[key]
        lst.remove((job.created_at, job.id))
        if not lst:
            del self.lists[key]

    def newest_first(self, queue: str | None, state: str | None, before: tuple | None) -> Iterator[tuple]:
        """(created_at, id) keys, newest first, strictly older than `before` when given."""
        keys = sorted(k for k in self.lists if (queue is None or k[0] == queue) and (state is None or k[1] == state))
        iterators = []
        for key in keys:
            lst = self.lists[key]
            if before is None:
                iterators.append(reversed(lst))
            else:
                iterators.append(lst.irange(maximum=before, inclusive=(True, False), reverse=True))
        if len(iterators) == 1:
            return iterators[0]
        return heapq.merge(*iterators, reverse=True)
