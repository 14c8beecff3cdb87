"""Snapshot encoding of the job store: canonical orjson bytes, columnar so that a million jobs load fast.

Jobs are written in the store's insertion order (submit order: identical on every replica that applied the
same log, and kept by restore), one column per field. Queue and state are small integer codes; times are
deltas (created_at from the previous job, run_at and updated_at from created_at), so most are small ints
that CPython does not allocate. Rarely-set fields travel in one dict per job (`x`), or null.

Only semantic state is written; every index is rebuilt by `decode`, in bulk (one sort or heapify each).
"""
from __future__ import annotations

import collections
import heapq
from operator import attrgetter
from typing import TYPE_CHECKING

import orjson
from sortedcontainers import SortedList

from raftqueue.store.indexes import _QueueReady
from raftqueue.store.model import (ACKED, CORE, DEAD, READY, RETRY, RUNNING, SCHEDULED, STATE_CODE, STATES,
                                   TERMINAL, Job, extras_dict, extras_kept)

if TYPE_CHECKING:
    from raftqueue.store.store import JobStore

FORMAT = "raftqueue-store"
VERSION = 3
_core = attrgetter(*CORE)


def encode(store: "JobStore") -> bytes:
    jobs = list(store.jobs.values())
    queue_names = sorted({job.queue for job in jobs})
    queue_code = {name: i for i, name in enumerate(queue_names)}
    columns = list(zip(*map(_core, jobs))) if jobs else [()] * len(CORE)
    ids, queues, states, priorities, run_ats, created, updated, attempts, max_retries, lease_until, tokens, \
        payloads = columns
    created_delta, previous = [], 0
    for at in created:
        created_delta.append(at - previous)
        previous = at
    extras = []
    for job in jobs:
        x = extras_dict(job.x)
        if x is not None and ("depends_on" in x or "backoff" in x):
            x = dict(x)
            if "depends_on" in x:
                x["depends_on"] = list(x["depends_on"])
            if "backoff" in x:
                x["backoff"] = list(x["backoff"])
        extras.append(x)
    return orjson.dumps({
        "format": FORMAT, "version": VERSION, "clock": store.clock, "counters": store.counters,
        "paused": sorted(store.paused), "queue_names": queue_names, "keys": store.keys.snapshot(),
        "jobs": {
            "id": ids, "queue": [queue_code[q] for q in queues], "state": [STATE_CODE[s] for s in states],
            "priority": priorities, "created_delta": created_delta,
            "run_after": [r - c for r, c in zip(run_ats, created)],
            "updated_after": [u - c for u, c in zip(updated, created)],
            "attempts": attempts, "max_retries": max_retries, "lease_until": lease_until, "lease_token": tokens,
            "payload": payloads, "x": extras,
        },
    }, option=orjson.OPT_SORT_KEYS)


def decode(data: bytes, store: "JobStore") -> "JobStore":
    """Fill the empty `store` from snapshot bytes (raises ValueError on a format it does not know)."""
    raw = orjson.loads(data)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise ValueError(f"unsupported snapshot: format {raw.get('format')!r} version {raw.get('version')!r}"
                         if isinstance(raw, dict) else "unsupported snapshot")
    store.clock = raw["clock"]
    store.counters.update(raw["counters"])
    store.paused = set(raw["paused"])
    store.keys.restore(raw.get("keys", []))
    names = raw["queue_names"]
    cols = raw["jobs"]
    jobs = store.jobs
    new = object.__new__
    state_names = STATES
    counts: collections.Counter = collections.Counter()
    listing: dict[tuple[str, str], list] = collections.defaultdict(list)
    ready: dict[str, list] = collections.defaultdict(list)
    promotion, expiry, terminal, scheduled = [], [], [], []
    created = 0
    for job_id, qc, sc, priority, delta, run_after, updated_after, attempts, max_retries, lease_until, token, \
            payload, x in zip(cols["id"], cols["queue"], cols["state"], cols["priority"], cols["created_delta"],
                              cols["run_after"], cols["updated_after"], cols["attempts"], cols["max_retries"],
                              cols["lease_until"], cols["lease_token"], cols["payload"], cols["x"]):
        if delta:
            created += delta
        job = new(Job)
        job.id = job_id
        job.queue = queue = names[qc]
        job.state = state = state_names[sc]
        job.priority = priority
        job.created_at = created
        job.run_at = created if run_after == 0 else created + run_after
        job.updated_at = created if updated_after == 0 else created + updated_after
        job.attempts = attempts
        job.max_retries = max_retries
        job.lease_until = lease_until
        job.lease_token = token
        job.payload = payload
        if x is not None:
            if "depends_on" in x:
                x["depends_on"] = tuple(x["depends_on"])
            if "backoff" in x:
                x["backoff"] = tuple(x["backoff"])
        job.x = extras_kept(x)
        job.ver = 0
        job.waiting = 0
        jobs[job_id] = job
        counts[(queue, state)] += 1
        listing[(queue, state)].append((created, job_id))
        if state == READY:
            ready[queue].append((-priority, job.run_at, created, job_id, 0))
        elif state == RUNNING:
            expiry.append((lease_until, job_id, 0))
        elif state == RETRY:
            promotion.append((job.run_at, job_id, 0))
        elif state == SCHEDULED:
            scheduled.append(job)
        elif state in TERMINAL:
            terminal.append(job)
        if x is not None and "idempotency_key" in x:
            store.idempotency[x["idempotency_key"]] = job_id

    for job in scheduled:  # dependencies: a missing dependency was ACKED and then purged
        for dep in job.depends_on:
            other = jobs.get(dep)
            if other is not None and other.state != ACKED:
                job.waiting += 1
                store.dependents.setdefault(dep, []).append(job.id)
        if job.waiting == 0:
            promotion.append((job.run_at, job.id, 0))
    for (queue, state), count in counts.items():
        store.by_state[state] += count
        store.by_queue.setdefault(queue, dict.fromkeys(STATES, 0))[state] = count
    for key, keys in listing.items():
        store.listing.lists[key] = SortedList(keys)
    for queue, entries in ready.items():
        entries.sort()
        index = _QueueReady()
        index.run.extend(entries)  # sorted: all of them are in order
        store.ready.heaps[queue] = index
    heapq.heapify(promotion)
    heapq.heapify(expiry)
    store.promotion.heap = promotion
    store.expiry.heap = expiry
    terminal.sort(key=lambda j: (j.updated_at, j.id))
    for job in terminal:
        store.finished.append((job.updated_at, job.id, 0))
        if job.state == DEAD:
            store.dead_by_queue.setdefault(job.queue, {})[job.id] = None
    return store

