"""The node's collector helpers: the pause clock counts collections on any thread, and the young collector
steps in only when CPython's own count did not collect the young generation."""
from __future__ import annotations

import gc
import threading

from raftqueue import gctune


def test_young_collector_collects_only_when_cpython_has_not(monkeypatch):
    stats = [{"collections": 7}]
    calls: list[int] = []

    def collect(generation=2):
        calls.append(generation)
        stats[0] = {"collections": stats[0]["collections"] + 1}
        return 0
    monkeypatch.setattr(gc, "collect", collect)
    monkeypatch.setattr(gc, "get_stats", lambda: stats)
    young = gctune.YoungCollector(every_changes=1_000)
    young.after(1_000)                 # first look: notes the count (7)
    young.after(1_500)                 # fewer than 1,000 changes since
    young.after(2_000)                 # 1,000 more and no collection since: collects
    stats[0] = {"collections": 20}     # CPython collected on its own
    young.after(3_000)                 # ... so this one does not
    young.after(4_000)                 # and none since: collects
    assert calls == [0, 0]


def test_young_collector_leaves_a_paused_collector_alone(monkeypatch):
    calls: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation) or 0)
    young = gctune.YoungCollector(every_changes=10)
    with gctune.paused():
        for changes in range(0, 100, 10):
            young.after(changes)
    assert calls == []


def test_pause_clock_counts_collections_run_on_any_thread():
    clock = gctune.PauseClock()
    gc.callbacks.append(clock)
    try:
        worker = threading.Thread(target=gc.collect)
        worker.start()
        worker.join()
        gc.collect(0)
    finally:
        gc.callbacks.remove(clock)
    assert clock.collections == 2 and clock.total_s > 0 and 0 < clock.longest_s <= clock.total_s
