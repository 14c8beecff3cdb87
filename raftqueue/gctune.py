"""Garbage-collector settings for a node that holds millions of jobs.

The store's objects never form reference cycles, but CPython's cyclic collector still walks every one of
them in a full collection: 0.37 s for a million jobs on a 2-core machine, longer than the Raft election
timeout, so a collection on the leader could cost a failover. A node therefore raises the collection
thresholds, pauses the collector around bulk work (restore, snapshot) and periodically `gc.freeze()`s what
is alive, moving long-lived objects out of the collector's sight. Frozen objects are still freed by
reference counting; only cyclic garbage alive at the moment of a freeze is kept (a few KB at most).

The youngest generation is also collected after every 5,000 job changes that saw no collection of it
(`YoungCollector`, after applying an entry), not only when its allocation count says so. CPython's count is allocations minus frees,
and frees of old objects count too: while retention purges as many jobs as are submitted, the count hardly
moves while the young generation itself grows. Measured in the bench's scenario 6: young collections of 250,000-300,000 objects
(the index tuples and Job objects of ~60,000 new jobs), 150-480 ms each, inside the Raft tick; with the
leader's tick stalled that long, followers started elections (six leader changes in one run).
"""
from __future__ import annotations

import contextlib
import gc
import time
from typing import Iterator

THRESHOLDS = (50_000, 20, 100)
FREEZE_EVERY_S = 30.0


class PauseClock:
    """Wall time the collector has run, whichever thread ran it (every thread waits for it: it holds the GIL).
    Plain floats updated from a gc callback: nothing in a callback may take a lock another thread could hold."""

    def __init__(self) -> None:
        self.total_s = 0.0
        self.longest_s = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        spent = time.perf_counter() - self._started
        self.total_s += spent
        self.collections += 1
        if spent > self.longest_s:
            self.longest_s = spent


PAUSES = PauseClock()


class YoungCollector:
    """Collects the youngest generation when `every_changes` jobs changed (each leaves a Job or a few index
    tuples in it) and CPython has not collected it meanwhile. Where its own count works this never fires;
    where frees of old objects hold that count back, it keeps the generation to about that many jobs' objects
    (a young collection costs about a microsecond per object it walks, whatever triggered it)."""

    def __init__(self, every_changes: int = 5_000) -> None:
        self.every_changes = every_changes
        self._changes = 0
        self._collections = -1

    def after(self, changes: int) -> None:
        if changes - self._changes < self.every_changes:
            return
        self._changes = changes
        collections = gc.get_stats()[0]["collections"]
        if collections == self._collections and gc.isenabled():  # (paused around bulk work: left to its end)
            gc.collect(0)
            collections = gc.get_stats()[0]["collections"]
        self._collections = collections


def configure() -> None:
    gc.set_threshold(*THRESHOLDS)
    if PAUSES not in gc.callbacks:
        gc.callbacks.append(PAUSES)


@contextlib.contextmanager
def paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def freeze() -> None:
    gc.freeze()
