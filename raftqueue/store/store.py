"""JobStore: the deterministic state machine every replica applies the Raft log to.

Pure: no clock, randomness, I/O or threads. `apply(command)` is the only way state changes; the command
contract is documented in `commands.py`. Reads (`get`, `list_jobs`, `stats`, `has_runnable`, `next_due_ms`)
never change semantic state (they may drop stale index entries).
"""
from __future__ import annotations

import collections
import hashlib
import sys
from typing import Any, Callable

from raftqueue.store import commands as c
from raftqueue.store import snapshot as snapshot_codec
from raftqueue.store.backoff import retry_delay_ms
from raftqueue.store.commands import Invalid, error
from raftqueue.store.indexes import ListingIndex, ReadyIndex, TimeIndex
from raftqueue.store.keys import KeyError_, KeyRegistry
from raftqueue.store.model import (ACKED, CANCELLED, DEAD, DEFAULT_BACKOFF, READY, RETRY, RUNNING, SCHEDULED, STATES,
                                   TERMINAL, Job)

COUNTERS = ("total_submits", "total_acks", "total_retries", "total_dead")
# Stale time-index entries dropped after each command: more than a batch of acks makes stale (1,000), so the
# heaps keep up, and few enough (about 2 ms) that catching up never stalls a tick.
TRIM_BUDGET = 1024
MANY = 1 << 40  # runnable_count: due jobs, not counted one by one


class Conflict(Exception):
    """The command is well-formed but impossible in the current state."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _is_running(job: Job) -> bool:
    return job.state == RUNNING


def _is_waiting_for_time(job: Job) -> bool:
    return (job.state == SCHEDULED and job.waiting == 0) or job.state == RETRY


class JobStore:
    def __init__(self) -> None:
        self.clock = 0
        self.jobs: dict[str, Job] = {}
        self.idempotency: dict[str, str] = {}
        self.paused: set[str] = set()
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.by_state = dict.fromkeys(STATES, 0)
        self.by_queue: dict[str, dict[str, int]] = {}
        self.ready = ReadyIndex()
        self.promotion = TimeIndex()   # SCHEDULED (dependencies met) and RETRY jobs, by run_at
        self.expiry = TimeIndex()      # RUNNING jobs, by lease_until
        self.listing = ListingIndex()
        self.dependents: dict[str, list[str]] = {}
        self.dead_by_queue: dict[str, dict[str, None]] = {}
        self.finished: collections.deque = collections.deque()  # (updated_at, id, ver), in finish order
        self.keys = KeyRegistry()
        self._handlers: dict[str, Callable] = {
            "create_key": lambda cmd, events: self.keys.create(cmd, self.clock),
            "revoke_key": lambda cmd, events: self.keys.revoke(cmd, self.clock),
            "revoke_own_key": lambda cmd, events: self.keys.revoke(cmd, self.clock, by_owner=True),
            "touch_keys": lambda cmd, events: self.keys.touch(cmd, self.clock),
            "submit": self._submit, "submit_batch": self._submit_batch, "lease": self._lease,
            "ack": self._ack, "ack_batch": self._ack_batch, "nack": self._nack, "release": self._release,
            "extend": self._extend,
            "cancel": self._cancel, "retry": self._retry, "retry_dead": self._retry_dead,
            "pause_queue": self._pause_queue, "resume_queue": self._resume_queue, "expire": self._expire,
            "purge": self._purge, "noop": self._noop,
        }

    # ===== applying ============================================================================================
    def unknown_to_this_build(self, command: Any) -> str | None:
        """Why this build cannot apply `command` at all (a kind or a command version it does not know), or None.

        Only a newer build writes such a command. Answering it like a malformed one would leave this replica
        in a state different from the newer replicas, which apply it; so the replica layer stops instead of
        applying it, and a leader never proposes one (ReplicatedStore.apply_entry, Context.propose_forwarded).
        A command of a known kind that is malformed is rejected alike by every build: that is not this case."""
        if type(command) is not dict:
            return None
        kind = command.get("kind")
        if type(kind) is str and kind not in self._handlers:
            return f"unknown command kind {kind!r}"
        version = command.get("v", c.COMMAND_VERSION)
        if version != c.COMMAND_VERSION:
            return f"unsupported command version {version!r}"
        return None

    def apply(self, command: dict, events: list | None = None) -> dict:
        """Apply one command. Never raises; a rejected command changes nothing (not even the clock)."""
        if not isinstance(command, dict):
            return error("validation_error", "a command must be an object")
        kind = command.get("kind")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return error("validation_error", f"unknown command kind {kind!r}")
        if command.get("v", c.COMMAND_VERSION) != c.COMMAND_VERSION:
            return error("validation_error", f"unsupported command version {command.get('v')!r}")
        now = command.get("now", 0)
        if isinstance(now, bool) or not isinstance(now, int) or not 0 <= now < c.INT_LIMIT:
            return error("validation_error", "now must be a non-negative integer (ms)")
        sink: list = [] if events is not None else _NULL_SINK
        previous = self.clock
        self.clock = max(previous, now)
        try:
            result = handler(command, sink)
        except Invalid as exc:
            self.clock = previous
            return error("validation_error", str(exc))
        except (Conflict, KeyError_) as exc:
            self.clock = previous
            return error(exc.code, str(exc))
        if events is not None:
            events.extend(sink)
        self.expiry.trim(self.jobs, _is_running, TRIM_BUDGET)
        self.promotion.trim(self.jobs, _is_waiting_for_time, TRIM_BUDGET)
        return result

    def register(self, kind: str, handler: Callable[[dict, list], dict]) -> None:
        """Add a command kind (later modules: API keys). The handler validates before it mutates."""
        self._handlers[kind] = handler

    # ----- state bookkeeping -----------------------------------------------------------------------------------
    def _count(self, job: Job, delta: int) -> None:
        self.by_state[job.state] += delta
        queue = self.by_queue.get(job.queue)
        if queue is None:
            queue = self.by_queue[job.queue] = dict.fromkeys(STATES, 0)
        queue[job.state] += delta

    def _enter(self, job: Job, state: str, events: list, kind: str | None) -> None:
        """Move `job` to `state`: counts, listing, indexes, events. Callers set time fields first."""
        if job.state is not None:
            self._count(job, -1)
            self.listing.remove(job)
            if job.state == DEAD:
                dead = self.dead_by_queue.get(job.queue)
                if dead is not None:
                    dead.pop(job.id, None)
                    if not dead:
                        del self.dead_by_queue[job.queue]
        job.ver += 1
        job.state = state
        job.updated_at = self.clock
        self._count(job, 1)
        self.listing.add(job)
        if state == READY:
            self.ready.push(job)
        elif state == RUNNING:
            self.expiry.push(job.lease_until, job)
        elif state == RETRY or (state == SCHEDULED and job.waiting == 0):
            self.promotion.push(job.run_at, job)
        elif state in TERMINAL:
            self.finished.append((job.updated_at, job.id, job.ver))
            if state == DEAD:
                self.dead_by_queue.setdefault(job.queue, {})[job.id] = None
        if kind is not None:
            events.append((kind, job.id, state, job.queue))

    def _clear_lease(self, job: Job) -> None:
        job.lease_until = None
        job.lease_token = None

    # ----- submit ----------------------------------------------------------------------------------------------
    def _parse_job(self, spec: dict, seen_keys: dict[str, str], seen_ids: set[str]) -> tuple[dict, str | None]:
        """Validate one submit spec; returns (fields, id of the existing job if it is an idempotent repeat).

        `seen_keys`/`seen_ids` are the idempotency keys and ids of earlier jobs of the same batch."""
        if not isinstance(spec, dict):
            raise Invalid("a job must be an object")
        job_id = c.get_str(spec, "job_id", max_len=256)
        key = c.get_str(spec, "idempotency_key", optional=True, max_len=1024)
        if key is not None:
            existing = self.idempotency.get(key) or seen_keys.get(key)
            if existing is not None:
                return {}, existing
        if job_id in self.jobs or job_id in seen_ids:
            raise Invalid(f"job_id {job_id} already exists")
        payload = spec.get("payload")
        if payload is None:
            payload = "null"
        if not isinstance(payload, str):
            raise Invalid("payload must be JSON text")
        fields = {
            "id": job_id, "payload": payload, "idempotency_key": key,
            # One str object per queue name, not one per job (JSON parsing makes a new one each time): ~56
            # bytes a job. Interned strings are freed when the last job of the queue goes.
            "queue": sys.intern(c.get_str(spec, "queue", optional=True, default="default", max_len=256)),
            "priority": c.get_int(spec, "priority", optional=True, default=0),
            "max_retries": c.get_int(spec, "max_retries", optional=True, default=3, lo=0, hi=1 << 30),
            "lease_ms": c.get_int(spec, "lease_ms", optional=True, lo=1),
            "backoff": c.get_backoff(spec) or DEFAULT_BACKOFF,
            "tags": c.get_tags(spec),
            "depends_on": c.get_ids(spec, "depends_on"),
        }
        run_at = c.get_int(spec, "run_at", optional=True, lo=0)
        delay = c.get_int(spec, "delay_ms", optional=True, lo=0)
        if run_at is None:  # no delay: the clock's own int object, shared with created_at (32 bytes a job)
            run_at = self.clock + delay if delay else self.clock
        fields["run_at"] = run_at
        for dep in fields["depends_on"]:
            job = self.jobs.get(dep)
            if job is None:
                if dep in seen_ids:
                    continue  # an earlier job of the same batch: it will exist, and not be finished
                raise Invalid(f"depends_on: unknown job {dep}")
            if job.state in (DEAD, CANCELLED):
                raise Invalid(f"depends_on: job {dep} is {job.state} and will never be ACKED")
        return fields, None

    def _create(self, fields: dict, events: list) -> Job:
        job = Job()
        job.id = fields["id"]
        job.queue = fields["queue"]
        job.state = None
        job.priority = fields["priority"]
        job.run_at = fields["run_at"]
        job.created_at = self.clock
        job.updated_at = self.clock
        job.attempts = 0
        job.max_retries = fields["max_retries"]
        job.lease_until = None
        job.lease_token = None
        job.payload = fields["payload"]
        if fields["lease_ms"] is not None:
            job.lease_ms = fields["lease_ms"]
        if fields["tags"]:
            job.tags = fields["tags"]
        if fields["depends_on"]:
            job.depends_on = tuple(fields["depends_on"])
        if fields["idempotency_key"] is not None:
            job.idempotency_key = fields["idempotency_key"]
        if fields["backoff"] != DEFAULT_BACKOFF:
            job.backoff = fields["backoff"]
        for dep in job.depends_on:
            if self.jobs[dep].state != ACKED:
                job.waiting += 1
                self.dependents.setdefault(dep, []).append(job.id)
        self.jobs[job.id] = job
        if job.idempotency_key is not None:
            self.idempotency[job.idempotency_key] = job.id
        self.counters["total_submits"] += 1
        state = READY if job.waiting == 0 and job.run_at <= self.clock else SCHEDULED
        self._enter(job, state, events, "submitted")
        return job

    def _submit_answer(self, job: Job, duplicate: bool) -> dict:
        return {"job_id": job.id, "state": job.state, "created_at": job.created_at, "run_at": job.run_at,
                "duplicate": duplicate}

    def _submit(self, cmd: dict, events: list) -> dict:
        fields, existing = self._parse_job(cmd, {}, set())
        if existing is not None:
            return self._submit_answer(self.jobs[existing], True)
        return self._submit_answer(self._create(fields, events), False)

    def _submit_batch(self, cmd: dict, events: list) -> dict:
        specs = cmd.get("jobs")
        if not isinstance(specs, list) or not specs:
            raise Invalid("jobs must be a non-empty list")
        seen_keys: dict[str, str] = {}
        seen_ids: set[str] = set()
        plan: list[tuple[dict, str | None]] = []
        for i, spec in enumerate(specs):
            try:
                fields, existing = self._parse_job(spec, seen_keys, seen_ids)
            except Invalid as exc:
                raise Invalid(f"jobs[{i}]: {exc}") from None
            if existing is None:
                seen_ids.add(fields["id"])
                if fields["idempotency_key"] is not None:
                    seen_keys[fields["idempotency_key"]] = fields["id"]
            plan.append((fields, existing))
        ids, states, duplicates = [], [], []
        created: dict[str, Job] = {}
        for fields, existing in plan:
            if existing is not None:
                job = self.jobs.get(existing) or created[existing]
                duplicates.append(True)
            else:
                job = self._create(fields, events)
                created[job.id] = job
                duplicates.append(False)
            ids.append(job.id)
            states.append(job.state)
        return {"job_ids": ids, "states": states, "duplicates": duplicates}

    # ----- lease -----------------------------------------------------------------------------------------------
    def _promote_due(self, events: list) -> int:
        promoted = 0
        for job in list(self.promotion.pop_due(self.clock, self.jobs, _is_waiting_for_time)):
            self._enter(job, READY, events, "ready")
            promoted += 1
        return promoted

    def _lease(self, cmd: dict, events: list) -> dict:
        queues = c.get_ids(cmd, "queues")
        max_jobs = c.get_int(cmd, "max_jobs", optional=True, default=1, lo=1, hi=100_000)
        lease_ms = c.get_int(cmd, "lease_ms", optional=True, lo=1)
        default_lease = c.get_int(cmd, "default_lease_ms", optional=True, default=30_000, lo=1)
        worker = c.get_str(cmd, "worker_id", optional=True, max_len=1024)
        if worker is not None:  # kept on every job it leased until the job is purged: one object per worker
            worker = sys.intern(worker)
        token_base = c.get_str(cmd, "token_base", max_len=256)
        self._promote_due(events)
        names = sorted(set(queues)) if queues else sorted(self.ready.heaps)
        names = [q for q in names if q not in self.paused]
        leased = []
        for i in range(max_jobs):
            best_queue, best = None, None
            for queue in names:
                entry = self.ready.top(queue, self.jobs)
                if entry is not None and (best is None or entry < best):
                    best_queue, best = queue, entry
            if best is None:
                break
            self.ready.pop(best_queue)
            job = self.jobs[best[3]]
            job.attempts += 1
            job.lease_until = self.clock + (lease_ms or job.lease_ms or default_lease)
            job.lease_token = f"{token_base}.{i}"
            job.worker_id = worker
            self._enter(job, RUNNING, events, "leased")
            leased.append({"job_id": job.id, "payload": job.payload, "queue": job.queue, "priority": job.priority,
                           "lease_until": job.lease_until, "lease_token": job.lease_token, "attempt": job.attempts,
                           "max_retries": job.max_retries, "tags": dict(job.tags), "checkpoint": job.checkpoint,
                           "progress": job.progress})
        return {"jobs": leased}

    # ----- completion ------------------------------------------------------------------------------------------
    def _running(self, cmd: dict, job_id: str) -> Job:
        """The job, RUNNING under an unexpired lease whose token matches (if one is given), or Conflict."""
        job = self.jobs.get(job_id)
        if job is None:
            raise Conflict("not_found", f"no job {job_id}")
        token = c.get_str(cmd, "lease_token", optional=True, max_len=1024)
        if job.state != RUNNING:
            raise Conflict("conflict", f"job {job_id} is {job.state}, not RUNNING")
        if job.lease_until <= self.clock:
            raise Conflict("conflict", f"the lease on job {job_id} has expired")
        if token is not None and token != job.lease_token:
            raise Conflict("conflict", f"stale or wrong lease token for job {job_id}")
        return job

    def _ack(self, cmd: dict, events: list) -> dict:
        job_id = c.get_str(cmd, "job_id", max_len=256)
        result = c.get_str(cmd, "result", optional=True)
        result_error = c.get_str(cmd, "result_error", optional=True)
        job = self._running(cmd, job_id)
        job.result = result
        job.result_error = result_error
        self._clear_lease(job)
        self.counters["total_acks"] += 1
        self._enter(job, ACKED, events, "acked")
        self._release_dependents(job, events)
        return {"job_id": job.id, "state": job.state}

    def _ack_batch(self, cmd: dict, events: list) -> dict:
        items = cmd.get("acks")
        if not isinstance(items, list) or not items:
            raise Invalid("acks must be a non-empty list")
        results = []
        for item in items:
            if not isinstance(item, dict):
                results.append({"job_id": None, "error": {"code": "validation_error", "message": "not an object"}})
                continue
            try:
                results.append(self._ack(item, events))
            except Invalid as exc:
                results.append({"job_id": item.get("job_id"), "error": {"code": "validation_error",
                                                                        "message": str(exc)}})
            except Conflict as exc:
                results.append({"job_id": item.get("job_id"), "error": {"code": exc.code, "message": str(exc)}})
        return {"results": results}

    def _fail_attempt(self, job: Job, message: str, retry_in_ms: int | None, events: list, kind: str) -> None:
        """The attempt in hand failed (nack or lease expiry): RETRY after a delay, or DEAD when used up."""
        job.last_error = message
        self._clear_lease(job)
        if job.attempts >= 1 + job.max_retries:
            self.counters["total_dead"] += 1
            self._enter(job, DEAD, events, "dead")
            self._cancel_dependents(job, events)
            return
        delay = retry_in_ms if retry_in_ms is not None else retry_delay_ms(job.id, job.attempts, *job.backoff)
        job.run_at = self.clock + delay
        self.counters["total_retries"] += 1
        self._enter(job, RETRY, events, kind)

    def _nack(self, cmd: dict, events: list) -> dict:
        job_id = c.get_str(cmd, "job_id", max_len=256)
        message = c.get_str(cmd, "error", optional=True, default="")
        retry_in = c.get_int(cmd, "retry_in_ms", optional=True, lo=0)
        job = self._running(cmd, job_id)
        self._fail_attempt(job, message, retry_in, events, "nacked")
        return {"job_id": job.id, "state": job.state, "run_at": job.run_at}

    def _release(self, cmd: dict, events: list) -> dict:
        """Give a leased job back untouched (a worker shutting down): READY now, and the attempt it was leased
        for is not counted. Unlike nack, no backoff, no error, and never DEAD."""
        job_id = c.get_str(cmd, "job_id", max_len=256)
        c.get_str(cmd, "lease_token", max_len=1024)  # required: only the lease holder may skip the attempt
        job = self._running(cmd, job_id)
        self._clear_lease(job)
        job.attempts -= 1
        self._enter(job, READY, events, "released")  # run_at unchanged: it keeps its place in lease order
        return {"job_id": job.id, "state": job.state, "attempts": job.attempts}

    def _extend(self, cmd: dict, events: list) -> dict:
        job_id = c.get_str(cmd, "job_id", max_len=256)
        lease_ms = c.get_int(cmd, "lease_ms", lo=1)
        progress = c.get_int(cmd, "progress", optional=True, lo=0, hi=100)
        checkpoint = c.get_str(cmd, "checkpoint", optional=True)
        job = self._running(cmd, job_id)
        job.lease_until = self.clock + lease_ms
        if progress is not None:
            job.progress = progress
        if checkpoint is not None:
            job.checkpoint = checkpoint
        job.ver += 1
        job.updated_at = self.clock
        self.expiry.push(job.lease_until, job)
        return {"job_id": job.id, "lease_until": job.lease_until}

    # ----- dependencies ----------------------------------------------------------------------------------------
    def _release_dependents(self, job: Job, events: list) -> None:
        for dep_id in self.dependents.pop(job.id, ()):
            dependent = self.jobs.get(dep_id)
            if dependent is None or dependent.state != SCHEDULED:
                continue
            dependent.waiting -= 1
            if dependent.waiting == 0:
                if dependent.run_at <= self.clock:
                    self._enter(dependent, READY, events, "ready")
                else:
                    dependent.ver += 1
                    self.promotion.push(dependent.run_at, dependent)

    def _cancel_dependents(self, job: Job, events: list) -> None:
        stack = [job.id]
        while stack:
            failed = stack.pop()
            for dep_id in self.dependents.pop(failed, ()):
                dependent = self.jobs.get(dep_id)
                if dependent is None or dependent.state in TERMINAL:
                    continue
                dependent.last_error = f"dependency {failed} ended without being ACKED"
                self._clear_lease(dependent)
                self._enter(dependent, CANCELLED, events, "cancelled")
                stack.append(dependent.id)

    # ----- operator actions ------------------------------------------------------------------------------------
    def _cancel(self, cmd: dict, events: list) -> dict:
        job_id = c.get_str(cmd, "job_id", max_len=256)
        reason = c.get_str(cmd, "reason", optional=True)
        job = self.jobs.get(job_id)
        if job is None:
            raise Conflict("not_found", f"no job {job_id}")
        if job.state in TERMINAL:
            raise Conflict("conflict", f"job {job_id} is already {job.state}")
        if reason is not None:
            job.last_error = reason
        self._clear_lease(job)
        self._enter(job, CANCELLED, events, "cancelled")
        self._cancel_dependents(job, events)
        return {"job_id": job.id, "state": job.state}

    def _redrive(self, job: Job, reset: bool, events: list) -> None:
        for dep in job.depends_on:  # an explicit redrive stops waiting on dependencies
            waiting = self.dependents.get(dep)
            if waiting and job.id in waiting:
                waiting.remove(job.id)
        if reset:
            job.attempts = 0
        elif job.attempts >= 1 + job.max_retries:
            job.max_retries = job.attempts
        job.run_at = self.clock
        job.result = job.result_error = None
        job.waiting = 0
        self._clear_lease(job)
        self._enter(job, READY, events, "ready")

    def _retry(self, cmd: dict, events: list) -> dict:
        job_id = c.get_str(cmd, "job_id", max_len=256)
        reset = c.get_bool(cmd, "reset_attempts")
        job = self.jobs.get(job_id)
        if job is None:
            raise Conflict("not_found", f"no job {job_id}")
        if job.state not in (DEAD, CANCELLED):
            raise Conflict("conflict", f"job {job_id} is {job.state}; only DEAD or CANCELLED jobs can be retried")
        self._redrive(job, reset, events)
        return {"job_id": job.id, "state": job.state}

    def _retry_dead(self, cmd: dict, events: list) -> dict:
        queue = c.get_str(cmd, "queue", optional=True, max_len=256)
        queues = [queue] if queue is not None else sorted(self.dead_by_queue)
        count = 0
        for name in queues:
            for job_id in list(self.dead_by_queue.get(name, ())):
                self._redrive(self.jobs[job_id], False, events)
                count += 1
        return {"count": count}

    def _pause_queue(self, cmd: dict, events: list) -> dict:
        queue = c.get_str(cmd, "queue", max_len=256)
        self.paused.add(queue)
        return {"queue": queue, "paused": True}

    def _resume_queue(self, cmd: dict, events: list) -> dict:
        queue = c.get_str(cmd, "queue", max_len=256)
        self.paused.discard(queue)
        return {"queue": queue, "paused": False}

    # ----- time ------------------------------------------------------------------------------------------------
    def _expire(self, cmd: dict, events: list) -> dict:
        expired = dead = 0
        for job in list(self.expiry.pop_due(self.clock, self.jobs, _is_running)):
            self._fail_attempt(job, "lease expired", None, events, "retry")
            expired += 1
            dead += job.state == DEAD
        return {"expired": expired, "dead": dead, "promoted": self._promote_due(events)}

    def _purge(self, cmd: dict, events: list) -> dict:
        retention = c.get_int(cmd, "retention_ms", lo=0)
        cutoff = self.clock - retention
        finished = self.finished
        purged = 0
        while finished and finished[0][0] <= cutoff:
            at, job_id, ver = finished.popleft()
            job = self.jobs.get(job_id)
            if job is None or job.ver != ver or job.state not in TERMINAL:
                continue
            self._drop(job)
            purged += 1
        return {"purged": purged}

    def _drop(self, job: Job) -> None:
        self._count(job, -1)
        self.listing.remove(job)
        if job.state == DEAD:
            dead = self.dead_by_queue.get(job.queue)
            if dead is not None:
                dead.pop(job.id, None)
                if not dead:
                    del self.dead_by_queue[job.queue]
        if job.idempotency_key is not None and self.idempotency.get(job.idempotency_key) == job.id:
            del self.idempotency[job.idempotency_key]
        self.dependents.pop(job.id, None)
        del self.jobs[job.id]

    def _noop(self, cmd: dict, events: list) -> dict:
        return {}

    # ===== reads ===============================================================================================
    def get(self, job_id: str) -> dict | None:
        job = self.jobs.get(job_id)
        return job.view() if job is not None else None

    def list_jobs(self, state: str | None = None, queue: str | None = None, limit: int = 50,
                  cursor: str | None = None) -> tuple[list[dict], str | None]:
        """Newest first. The cursor is opaque: "<created_at>.<job_id>" of the last job of the previous page."""
        before = None
        if cursor:
            created, _, job_id = cursor.partition(".")
            before = (int(created), job_id)
        out, last = [], None
        for key in self.listing.newest_first(queue, state, before):
            if len(out) == limit:
                return out, f"{last[0]}.{last[1]}"
            out.append(self.jobs[key[1]].view())
            last = key
        return out, None

    def stats(self) -> dict:
        by_queue = {}
        for name in sorted(self.by_queue):
            counts = self.by_queue[name]
            total = sum(counts.values())
            if total or name in self.paused:
                by_queue[name] = {"total": total, "by_state": dict(counts), "paused": name in self.paused}
        for name in sorted(self.paused):
            by_queue.setdefault(name, {"total": 0, "by_state": dict.fromkeys(STATES, 0), "paused": True})
        return {"total": len(self.jobs), "by_state": dict(self.by_state), "by_queue": by_queue,
                "runnable": self.by_state[READY], "scheduled": self.by_state[SCHEDULED] + self.by_state[RETRY],
                "running": self.by_state[RUNNING], **self.counters, "clock": self.clock}

    def has_runnable(self, queues: list[str], now_ms: int) -> bool:
        """Could a lease at time now_ms get a job from these queues (empty list = all)?"""
        return self.runnable_count(queues, now_ms) > 0

    def runnable_count(self, queues: list[str], now_ms: int) -> int:
        """How many jobs a lease at now_ms could take from these queues (a list; empty = all): the READY jobs of
        the unpaused ones, plus `MANY` when a waiting job of theirs is due (promoted by the lease itself; not
        counted). It sees a due job only when it is the first due of all queues (the leader's `expire` promotes
        the others, and their READY events wake the long polls)."""
        names = queues or list(self.by_queue)
        count = 0
        for queue in names:
            counts = self.by_queue.get(queue)
            if counts is not None and queue not in self.paused:
                count += counts[READY]
        entry = self.promotion.first(self.jobs, _is_waiting_for_time)
        if entry is not None and entry[0] <= now_ms:
            job = self.jobs[entry[1]]
            if (not queues or job.queue in names) and job.queue not in self.paused:
                count += MANY
        return count

    def next_due_ms(self) -> int | None:
        """When an `expire` would next change something (a lease ends or a run_at arrives)."""
        times = [e[0] for e in (self.expiry.first(self.jobs, _is_running),
                                self.promotion.first(self.jobs, _is_waiting_for_time)) if e is not None]
        return min(times) if times else None

    def next_purge_ms(self, retention_ms: int) -> int | None:
        finished = self.finished
        while finished:
            at, job_id, ver = finished[0]
            job = self.jobs.get(job_id)
            if job is not None and job.ver == ver and job.state in TERMINAL:
                return at + retention_ms
            finished.popleft()
        return None

    def queues(self) -> list[str]:
        return sorted(set(self.by_queue) | self.paused)

    def ready_head(self, queue: str) -> int | None:
        """run_at of the READY job first in lease order in `queue` (metrics; read-only)."""
        entry = self.ready.peek(queue, self.jobs)
        return entry[1] if entry is not None else None

    def paused_queues(self) -> list[str]:
        return sorted(self.paused)

    # ===== snapshots ===========================================================================================
    def snapshot(self) -> bytes:
        """Canonical bytes of the semantic state (see snapshot.py): equal states give equal bytes."""
        return snapshot_codec.encode(self)

    def digest(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    @classmethod
    def restore(cls, data: bytes) -> "JobStore":
        return snapshot_codec.decode(data, cls())


class _NullSink(list):
    """Discards events when the caller did not ask for them (keeps handlers branch-free)."""

    def append(self, item) -> None:  # noqa: D401
        pass

    def extend(self, items) -> None:
        pass


_NULL_SINK = _NullSink()
