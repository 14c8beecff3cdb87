"""The node's collector helpers: the pause clock counts collections on any thread, and the young collector
runs only while the store is busy and at most every `every_s`."""
from __future__ import annotations

import gc
import threading

from raftqueue import gctune


def _count_collects(monkeypatch) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda generation=2: calls.append(generation) or 0)
    return calls


def test_young_collector_runs_while_busy_and_not_more_often_than_asked(monkeypatch):
    calls = _count_collects(monkeypatch)
    young = gctune.YoungCollector(every_s=0.1, min_changes=1_000)
    young.after(changes=5_000, now=10.0)      # busy, first time: collects
    young.after(changes=5_500, now=10.2)      # time is up, but only 500 changes since: left to CPython
    young.after(changes=9_000, now=10.25)     # both: collects
    young.after(changes=12_000, now=10.3)     # busy, but too soon
    assert calls == [0, 0]


def test_young_collector_leaves_a_paused_collector_alone(monkeypatch):
    calls = _count_collects(monkeypatch)
    with gctune.paused():
        gctune.YoungCollector().after(changes=10_000, now=100.0)
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
