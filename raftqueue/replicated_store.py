"""The job store as the Raft node sees it: apply entries under a lock, snapshot, restore, housekeeping.

Runs on the Raft tick thread. It is the only writer of the store; readers on the event loop take `lock`.
It is deliberately not the SyncObj itself, so nothing unpicklable (locks, callbacks) lives on the SyncObj.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
from typing import Callable

import orjson

from raftqueue import gctune
from raftqueue.clock import Clock
from raftqueue.forked import prepare_child
from raftqueue.raft.errors import CannotApply
from raftqueue.stamping import COMMAND_VERSION
log = logging.getLogger("raftqueue.state")

AppliedHook = Callable[[int, list], None]
RestoredHook = Callable[[int], None]

EXPIRE_MIN_INTERVAL_MS = 10
PURGE_MIN_INTERVAL_MS = 1000


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


class ReplicatedStore:
    INLINE_DIGEST_JOBS = 50_000  # ~70 ms under the lock; above this the digest is hashed in a forked child

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
        self._digest_lock = asyncio.Lock()
        # Lease commands applied by this node [that leased jobs, that leased none] (/metrics): every replica
        # applies the same log, so each counts the same since it started. Not part of the replicated state.
        self.lease_commands = [0, 0]
        self._young = gctune.YoungCollector()
        self._changes = 0  # jobs changed by the entries this node applied (drives `_young`)

    def unknown_command(self, commands: list) -> str | None:
        """Why this build could not apply one of `commands` (see JobStore.unknown_to_this_build), or None.
        A leader checks what others planned before proposing it: it must not write what its own replica
        (and every replica of its build) would stop at."""
        unknown = self.store.unknown_to_this_build
        for command in commands:
            reason = unknown(command)
            if reason is not None:
                return reason
        return None

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
            reason = self.unknown_command(commands) if type(commands) is list else None
            if reason is not None:  # before any change: a newer build's command stops this node (fail-stop)
                raise CannotApply(index, reason)
            for command in commands:
                try:
                    result = store.apply(command, events)
                except Exception:  # deterministic on every replica; must not stop the log
                    log.exception("store.apply raised at index %d", index)
                    result = {"error": {"code": "internal", "message": "the store could not apply this command"}}
                results.append(result)
                leased = result.get("jobs") if type(result) is dict else None  # only a lease answers "jobs"
                if leased is not None:
                    self.lease_commands[0 if leased else 1] += 1
            self.state_index = index
        self._changes += len(events)  # one event per job changed
        self._young.after(self._changes)  # outside the lock: readers need not wait for the collector
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
        with self.lock:  # next_due_ms and next_purge_ms drop stale index entries, as readers on other threads may
            return self._housekeeping()

    def _housekeeping(self) -> list[bytes]:
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
        """(state index, digest), cached per index. Holds the lock throughout: for small states only (tests,
        the store benchmark). A node serving requests uses `digest_async`."""
        with self.lock:
            if self._digest is None or self._digest[0] != self.state_index:
                with gctune.paused():
                    self._digest = (self.state_index, self.store.digest())
            return self._digest

    async def digest_async(self) -> tuple[int, str]:
        """(state index, digest) without stalling the node on a big state.

        Hashing serialises every job: about 1.4 s and the state's size in memory per million jobs. Under the
        lock that stalled applies, and with them the Raft heartbeats, for seconds: one `cluster status` on a
        two-million-job node cost a leader election. Above INLINE_DIGEST_JOBS the lock is held only to fork;
        a child hashes its frozen copy and writes the result to a pipe."""
        async with self._digest_lock:  # concurrent callers share one computation
            with self.lock:
                if self._digest is not None and self._digest[0] == self.state_index:
                    return self._digest
                if len(getattr(self.store, "jobs", ())) < self.INLINE_DIGEST_JOBS:  # (test stores have no jobs)
                    with gctune.paused():
                        self._digest = (self.state_index, self.store.digest())
                    return self._digest
                index = self.state_index
                read_end, write_end = os.pipe()
                parent = os.getpid()
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        os.close(read_end)
                        prepare_child(parent)
                        gc.disable()
                        os.write(write_end, self.store.digest().encode())
                        code = 0
                    finally:
                        os._exit(code)
            os.close(write_end)
            loop = asyncio.get_running_loop()
            try:
                text = await loop.run_in_executor(None, _read_all, read_end)
            finally:
                os.close(read_end)
                await loop.run_in_executor(None, os.waitpid, pid, 0)
            if len(text) != 64:
                raise RuntimeError("the digest child failed")
            with self.lock:
                if self._digest is None or self._digest[0] < index:
                    self._digest = (index, text.decode())
            return index, text.decode()
