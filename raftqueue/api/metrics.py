"""Prometheus metrics at `GET /metrics` (prometheus-client, one registry per node).

Three sources, so that a scrape costs little and request paths stay O(1):
- counters fed by applied store events (`raftqueue_jobs_<kind>_total{queue}`): every replica applies the same
  log, so every node reports the same totals since it started;
- observations on the request path: HTTP latency by route and status, proposal (commit) latency, lease wait,
  forwarding errors;
- a collector that reads the current state at scrape time: jobs by queue and state, paused queues, the age of
  the head of each queue, Raft role, term, indexes, group-commit entry sizes.
"""
from __future__ import annotations

import asyncio
import collections
import time

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from raftqueue import gctune
from raftqueue.replica import Replica
from raftqueue.store.model import STATES

disable_created_metrics()  # no *_created series: they double the output and dashboards do not use them
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_EVENT_COUNTERS = {"submitted": "submitted", "leased": "leased", "acked": "acked", "nacked": "nacked",
                   "released": "released", "retry": "retried", "dead": "dead", "cancelled": "cancelled"}
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_ROLES = ("leader", "candidate", "follower", "starting")


class Metrics:
    def __init__(self, replica: Replica, node_id: str) -> None:
        self.replica = replica
        self.node_id = node_id
        self.registry = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple, object] = {}  # (id(metric), *labels) -> labels child
        r = self.registry
        self.job_events = {
            kind: Counter(f"raftqueue_jobs_{name}", f"Jobs {name} (applied store events) since this node started",
                          ["queue"], registry=r)
            for kind, name in _EVENT_COUNTERS.items()}
        self.http = Histogram("raftqueue_http_request_duration_seconds", "HTTP requests served by this node",
                              ["method", "route", "status"], buckets=_LATENCY_BUCKETS, registry=r)
        self.proposals = Histogram("raftqueue_raft_proposal_duration_seconds",
                                   "Time from proposing on the leader to commit and apply", buckets=_LATENCY_BUCKETS,
                                   registry=r)
        self.lease_wait = Histogram("raftqueue_lease_wait_seconds",
                                    "Time a job waited from becoming runnable (run_at) to its lease", ["queue"],
                                    buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, 3600),
                                    registry=r)
        self.leader_changes = Counter("raftqueue_raft_leader_changes",
                                      "Times this node saw the cluster's leader change", registry=r)
        r.register(_StateCollector(self))
        self.events_hub = None  # api/events.EventHub, set by create_app
        self.lease_gate = None  # api/lease_gate.LeaseGate, set by create_app
        self.forwarders: list = []  # api/forward.Forwarder and BatchForwarder (their `errors` counters)
        self._last_leader: str | None = None
        self._watch: asyncio.Task | None = None

    # ----- wiring ----------------------------------------------------------------------------------------------
    def attach(self) -> None:
        self.replica.add_listener(self.on_applied)
        self.replica.on_committed = self.proposals.observe
        self._watch = asyncio.ensure_future(self._watch_leader())

    def detach(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self.replica.remove_listener(self.on_applied)
        self.replica.on_committed = None

    async def _watch_leader(self) -> None:
        while True:
            leader = self.replica.leader
            leader_id = leader.id if leader is not None else None
            if leader_id is not None and leader_id != self._last_leader:
                if self._last_leader is not None:
                    self.leader_changes.inc()
                self._last_leader = leader_id
            await asyncio.sleep(0.25)

    def on_applied(self, index: int, events: list) -> None:
        """Count store events; for leases, observe how long the job had been runnable.

        Runs for every applied entry (a batch entry has thousands of events): counts are summed per
        (kind, queue) first, so each metric child is looked up and locked once per entry, not per job."""
        counts: collections.Counter = collections.Counter()
        leased = []
        tracked = self.job_events
        for kind, job_id, _state, queue in events:
            if kind in tracked:
                counts[kind, queue] += 1
                if kind == "leased":
                    leased.append((job_id, queue))
        for (kind, queue), n in counts.items():
            self._child(tracked[kind], queue).inc(n)
        if leased:
            now_ms = time.time() * 1000
            with self.replica.reading() as store:
                jobs = store.jobs
                for job_id, queue in leased:
                    job = jobs.get(job_id)
                    if job is not None and job.run_at is not None:
                        self._child(self.lease_wait, queue).observe(max(0.0, (now_ms - job.run_at) / 1000))

    def _child(self, metric, *labels: str):
        """A cached labels(...) child: labels() builds a tuple and takes a lock on every call."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            if len(self._children) > 10_000:  # queue names come from clients: keep the cache bounded
                self._children.clear()
            child = self._children[key] = metric.labels(*labels)
        return child

    def middleware(self):
        histogram = self.http

        @web.middleware
        async def middleware(request: web.Request, handler):
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                info = request.match_info
                route = info.route.resource.canonical if info is not None and info.route.resource else "unmatched"
                if route != "/metrics":
                    self._child(histogram, request.method, route, str(status)).observe(
                        time.perf_counter() - started)
        return middleware

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """Gauges read from the store and the Raft node at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        replica = self.metrics.replica
        jobs = GaugeMetricFamily("raftqueue_jobs", "Jobs in the store by queue and state", labels=["queue", "state"])
        paused = GaugeMetricFamily("raftqueue_queue_paused", "1 when the queue is paused", labels=["queue"])
        head_age = GaugeMetricFamily("raftqueue_queue_oldest_runnable_age_seconds",
                                     "Age (now - run_at) of the READY job first in lease order; with one priority "
                                     "level, the oldest runnable job", labels=["queue"])
        now_ms = time.time() * 1000
        with replica.reading() as store:
            for queue, counts in sorted(store.by_queue.items()):
                for state in STATES:
                    jobs.add_metric([queue, state], counts.get(state, 0))
            for queue in store.queues():
                paused.add_metric([queue], 1 if queue in store.paused else 0)
                head = store.ready_head(queue)
                head_age.add_metric([queue], max(0.0, (now_ms - head) / 1000) if head is not None else 0.0)
        yield jobs
        yield paused
        yield head_age
        errors = CounterMetricFamily("raftqueue_forward_errors", "Requests a follower could not forward to the "
                                     "leader: not_sent (safe to retry) or broken (outcome unknown)", labels=["reason"])
        for reason in ("not_sent", "broken"):
            errors.add_metric([reason], sum(f.errors[reason] for f in self.metrics.forwarders))
        yield errors
        hub = self.metrics.events_hub
        if hub is not None:
            yield GaugeMetricFamily("raftqueue_sse_subscribers", "Open /events streams on this node",
                                    value=hub.subscribers)
            yield CounterMetricFamily("raftqueue_sse_dropped_subscribers",
                                      "Event streams closed because the client read too slowly",
                                      value=hub.dropped_total)
        lease_commands = CounterMetricFamily("raftqueue_lease_commands", "Lease commands this node applied, by "
                                             "whether they leased a job (empty ones were written for nothing)",
                                             labels=["result"])
        leased, empty = replica.state.lease_commands
        lease_commands.add_metric(["leased"], leased)
        lease_commands.add_metric(["empty"], empty)
        yield lease_commands
        gate = self.metrics.lease_gate
        if gate is not None:
            yield CounterMetricFamily("raftqueue_leases_not_proposed", "Leases this node answered empty as leader "
                                      "without writing to the log: nothing they could take was left",
                                      value=gate.not_proposed)
        pauses = gctune.PAUSES
        yield CounterMetricFamily("raftqueue_gc_pause_seconds", "Wall time this node's garbage collector ran "
                                  "(every thread waits meanwhile, the Raft thread too)", value=pauses.total_s)
        yield GaugeMetricFamily("raftqueue_gc_longest_pause_seconds", "The longest single garbage collection "
                                "since the node started", value=pauses.longest_s)
        node = replica.node
        role = GaugeMetricFamily("raftqueue_raft_role", "1 for this node's current Raft role", labels=["role"])
        current = replica.role
        for name in _ROLES:
            role.add_metric([name], 1 if current == name else 0)
        yield role
        if node is None:
            return
        for name, value, text in (("raftqueue_raft_term", node.term, "Current Raft term"),
                                  ("raftqueue_raft_commit_index", node.commit_index, "Highest committed log index"),
                                  ("raftqueue_raft_applied_index", replica.applied_index, "Highest applied index"),
                                  ("raftqueue_raft_last_log_index", node.last_log_index, "Last index in the log"),
                                  ("raftqueue_raft_snapshot_index", node.snapshot_index, "Index of the snapshot")):
            yield GaugeMetricFamily(name, text, value=value)
        from raftqueue.raft.node import GROUP_BUCKETS
        sizes = list(node.group_sizes)
        cumulative, buckets = 0, []
        for bound, count in zip(GROUP_BUCKETS, sizes):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
        yield HistogramMetricFamily("raftqueue_raft_group_commit_commands",
                                    "Commands per group-commit log entry proposed by this node as leader",
                                    buckets=buckets, sum_value=node.group_commands)
        yield CounterMetricFamily("raftqueue_raft_group_commit_entries",
                                  "Group-commit entries proposed by this node as leader", value=cumulative)


async def handle_metrics(request: web.Request) -> web.Response:
    metrics: Metrics = request.app[METRICS]
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


METRICS = web.AppKey("metrics", Metrics)
