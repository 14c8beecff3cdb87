"""The job store as the Raft node sees it: apply entries under a lock, snapshot, restore, housekeeping.

Runs on the Raft tick thread. It is the only writer of the store; readers on the event loop take `lock`.
It is deliberately not the SyncObj itself, so nothing unpicklable (locks, callbacks) lives on the SyncObj.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

import orjson

from raftqueue import gctune
from raftqueue.clock import Clock
from raftqueue.stamping import COMMAND_VERSION
log = logging.getLogger("raftqueue.state")

AppliedHook = Callable[[int, list], None]
RestoredHook = Callable[[int], None]

EXPIRE_MIN_INTERVAL_MS = 10
PURGE_MIN_INTERVAL_MS = 1000


class ReplicatedStore:
    def __init__(self, clock: Clock, retention_ms: int, store_cls: type | None = None) -> None:
        if store_cls is None:
            from raftqueue.store import JobStore
            store_cls = JobStore
        self.store_cls = store_cls
        self.lock = threading.RLock()
        self.store = store_cls()
        self.state_index = 0  # Raft index of the last entry that reached the store
        self.clock = clock
        self.retention_ms = retention_ms
        self.on_applied: AppliedHook | None = None
        self.on_restored: RestoredHook | None = None
        self._last_expire_ms = 0
        self._last_purge_ms = 0
        self._digest: tuple[int, str] | None = None

    def apply_entry(self, blob: bytes, index: int) -> list:
        try:
            commands = orjson.loads(blob)
        except orjson.JSONDecodeError:
            log.error("entry %d is not JSON; skipped on every replica alike", index)
            commands = []
        events: list = []
        results: list = []
        with self.lock:
            store = self.store
            for command in commands:
                try:
                    result = store.apply(command, events)
                except Exception:  # deterministic on every replica; must not stop the log
                    log.exception("store.apply raised at index %d", index)
                    result = {"error": {"code": "internal", "message": "the store could not apply this command"}}
                results.append(result)
            self.state_index = index
        hook = self.on_applied
        if hook is not None:
            hook(index, events)
        return results

    def snapshot_body(self) -> bytes:
        """Called in the forked snapshot child: no collector there (it would also copy every page it touches)."""
        import gc
        gc.disable()
        return self.store.snapshot()

    def restore_body(self, body: bytes, index: int) -> None:
        with gctune.paused():
            store = self.store_cls.restore(body)
        gctune.freeze()
        with self.lock:
            self.store = store
            self.state_index = index
        hook = self.on_restored
        if hook is not None:
            hook(index)

    def housekeeping(self, is_leader: bool) -> list[bytes]:
        """Commands the leader should propose now: expire when a lease or run_at is due, purge when due."""
        store = self.store
        now = max(self.clock.now_ms(), store.clock)
        commands: list[bytes] = []
        due = store.next_due_ms()
        if due is not None and due <= now and now - self._last_expire_ms >= EXPIRE_MIN_INTERVAL_MS:
            self._last_expire_ms = now
            commands.append(orjson.dumps({"kind": "expire", "v": COMMAND_VERSION, "now": now}))
        purge_at = store.next_purge_ms(self.retention_ms)
        if purge_at is not None and purge_at <= now and now - self._last_purge_ms >= PURGE_MIN_INTERVAL_MS:
            self._last_purge_ms = now
            commands.append(orjson.dumps({"kind": "purge", "v": COMMAND_VERSION, "now": now,
                                          "retention_ms": self.retention_ms}))
        return commands

    def digest(self) -> tuple[int, str]:
        """(state index, digest), cached per index: hashing a million jobs takes about a second."""
        with self.lock:
            if self._digest is None or self._digest[0] != self.state_index:
                with gctune.paused():
                    self._digest = (self.state_index, self.store.digest())
            return self._digest
