"""The history checker: what a job queue must never do, found in a recorded chaos run.

`check(history, final)` reads every client operation (invoke/complete pairs with outcomes ok / fail /
unknown) and the final state read after all faults healed and the queue drained:

    final = {"jobs": {job_id: GET /jobs/{id} view, ...},      # every job the cluster still knows
             "missing": [job ids answered 404],
             "nodes": [{"node_id", "applied_index", "state_digest"}, ...],
             "expected_nodes": 3}

Failures (each must be zero):
  lost                a submit (or batch item) answered ok whose job is missing, or not ACKED/DEAD/CANCELLED
  duplicated          one idempotency key behind two job ids
  double_completed    two ok acks of one job (without a redrive between), or an ok ack with a stale token:
                      a later-attempt lease of the job had already been answered when the ack was sent
  overlapping_leases  an ok lease granted (server clock: lease_until - lease_ms) before an earlier lease of
                      the same job ended (its lease_until, as moved by ok extends), with no ack/nack/cancel of
                      that earlier lease (ok or unknown outcome) sent before the later lease was answered
  early_lease         an ok lease granted before the job's run_at (from the answer of the submit that made it,
                      else created_at + delay_ms; or the run_at of an ok nack of the previous attempt)
  early_dead          a final job DEAD with attempts < 1 + max_retries, or any job with more attempts
  divergent_replicas  nodes with different digests at the same applied index, or nodes that did not report
Counted, not failures: submits with unknown outcome, split into landed / not landed.

Only server times are compared with server times and client times with client times: node clocks may be
skewed on purpose, and the store's clock never runs backwards.
"""
from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterator

from raftqueue.chaos.history import FAIL, OK, UNKNOWN, History, Op
from raftqueue.timefmt import parse_rfc3339

FAILURE_CHECKS = ("lost", "duplicated", "double_completed", "overlapping_leases", "early_lease", "early_dead",
                  "divergent_replicas")
TERMINAL = ("ACKED", "DEAD", "CANCELLED")
WRITE_KINDS = ("submit", "submit_batch", "ack", "ack_batch", "nack", "extend", "cancel")
EXAMPLES = 5


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    try:
        return parse_rfc3339(value)
    except (ValueError, TypeError):
        return None


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(p * len(sorted_values)))]


@dataclass
class Lease:
    job_id: str
    token: str
    attempt: int
    granted_ms: int | None
    until_ms: int | None
    op: Op


@dataclass
class Report:
    header: dict
    faults: list
    failures: dict[str, list] = field(default_factory=lambda: {name: [] for name in FAILURE_CHECKS})
    unknown_submits: dict[str, int] = field(default_factory=lambda: {"landed": 0, "not_landed": 0})
    ops: dict[str, dict] = field(default_factory=dict)
    failovers: list[dict] = field(default_factory=list)
    duration_s: float = 0.0
    jobs_total: int = 0

    @property
    def ok(self) -> bool:
        return not any(self.failures.values())

    def failed_checks(self) -> list[str]:
        return [name for name in FAILURE_CHECKS if self.failures[name]]

    def to_dict(self) -> dict:
        return {"ok": self.ok, "header": self.header, "faults": self.faults,
                "counts": {name: len(items) for name, items in self.failures.items()},
                "examples": {name: items[:EXAMPLES] for name, items in self.failures.items() if items},
                "unknown_submits": self.unknown_submits, "ops": self.ops, "failovers": self.failovers,
                "duration_s": self.duration_s, "jobs_total": self.jobs_total}

    def render(self) -> str:
        lines = []
        h = self.header
        lines.append(f"seed: {h.get('seed')}   nodes: {h.get('nodes')}   duration: {self.duration_s:.1f} s   "
                     f"partitions: {h.get('partition_mode', 'n/a')}")
        if h.get("command"):
            lines.append(f"command: {h['command']}")
        if h.get("schedule"):
            lines.append("fault schedule:")
            for item in h["schedule"]:
                lines.append(f"  t={item['t']:7.2f}s  {item['fault']:<12} {item.get('target', '')}  "
                             f"{item.get('hold', '')}")
        lines.append(f"faults injected: {len(self.faults)}")
        kinds = defaultdict(int)
        for fault in self.faults:
            kinds[fault["fault"]] += 1
        if kinds:
            lines.append("  " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
        lines.append(f"jobs in final state: {self.jobs_total}")
        lines.append("checks:")
        for name in FAILURE_CHECKS:
            items = self.failures[name]
            lines.append(f"  {name:<20} {len(items)}")
            for example in items[:EXAMPLES]:
                lines.append(f"      e.g. {example}")
        lines.append(f"  unknown submits      landed {self.unknown_submits['landed']}, "
                     f"not landed {self.unknown_submits['not_landed']} (counted, not failures)")
        lines.append("operations (latency of ok answers, ms):")
        lines.append(f"  {'kind':<13}{'count':>8}{'ok':>8}{'fail':>7}{'unknown':>9}{'ok/s':>9}"
                     f"{'p50':>8}{'p95':>8}{'p99':>8}")
        for kind, s in sorted(self.ops.items()):
            lines.append(f"  {kind:<13}{s['count']:>8}{s['ok']:>8}{s['fail']:>7}{s['unknown']:>9}{s['ok_per_s']:>9.1f}"
                         f"{s['p50_ms']:>8.1f}{s['p95_ms']:>8.1f}{s['p99_ms']:>8.1f}")
        if self.failovers:
            times = [f["seconds"] for f in self.failovers if f["seconds"] is not None]
            lines.append(f"failovers (fault on the leader -> first ok write sent after it): {len(self.failovers)}"
                         + (f", median {statistics.median(times):.2f} s, max {max(times):.2f} s" if times else ""))
        verdict = "result: OK" if self.ok else f"result: FAIL ({', '.join(self.failed_checks())})"
        lines.append(verdict)
        return "\n".join(lines)


# ----- reading the history -------------------------------------------------------------------------------------
def _submitted(ops: list[Op]) -> Iterator[tuple[Op, dict, str | None, str]]:
    """(op, job spec, job id or None, outcome) for every single submit and every batch item."""
    for op in ops:
        if op.kind == "submit":
            job_id = op.result.get("job_id") if op.outcome == OK and isinstance(op.result, dict) else None
            yield op, op.args, job_id, op.outcome
        elif op.kind == "submit_batch":
            ids = op.result.get("job_ids") if op.outcome == OK and isinstance(op.result, dict) else None
            for i, spec in enumerate(op.args.get("jobs", [])):
                yield op, spec, (ids[i] if ids and i < len(ids) else None), op.outcome


def _payload_token(spec: dict) -> str | None:
    payload = spec.get("payload")
    return payload.get("token") if isinstance(payload, dict) else None


def _leases(ops: list[Op]) -> dict[str, list[Lease]]:
    out: dict[str, list[Lease]] = defaultdict(list)
    for op in ops:
        if op.kind != "lease" or op.outcome != OK or not isinstance(op.result, dict):
            continue
        jobs = op.result["jobs"] if "jobs" in op.result else [op.result]
        lease_ms = op.args.get("lease_ms")
        for job in jobs:
            until = _ms(job.get("lease_until"))
            granted = until - lease_ms if until is not None and lease_ms is not None else None
            out[job["job_id"]].append(Lease(job["job_id"], job.get("lease_token"), job.get("attempt", 0), granted,
                                            until, op))
    for leases in out.values():
        leases.sort(key=lambda lease: lease.attempt)
    return out


def _per_job_writes(ops: list[Op]) -> dict[str, list[tuple[Op, dict, str]]]:
    """job id -> [(op, item args, item outcome)] for ack/nack/extend/cancel/retry (batch acks split)."""
    out: dict[str, list] = defaultdict(list)
    for op in ops:
        if op.kind in ("ack", "nack", "extend", "cancel", "retry"):
            out[op.args.get("job_id")].append((op, op.args, op.outcome))
        elif op.kind == "ack_batch":
            results = op.result.get("results", []) if op.outcome == OK and isinstance(op.result, dict) else []
            for i, item in enumerate(op.args.get("acks", [])):
                if op.outcome != OK:
                    outcome = op.outcome
                elif i < len(results) and "error" not in results[i]:
                    outcome = OK
                else:
                    outcome = FAIL
                out[item.get("job_id")].append((op, {**item, "_batch": True}, outcome))
    return out


# ----- the checks --------------------------------------------------------------------------------------------------
def check(history: History, final: dict) -> Report:
    ops = [op for op in history.ops if op.complete_t is not None]
    jobs: dict[str, dict] = final.get("jobs", {})
    report = Report(header=history.header, faults=[vars(f) for f in history.faults], jobs_total=len(jobs))
    report.duration_s = max((op.complete_t for op in ops), default=0.0) - min((op.invoke_t for op in ops), default=0.0)
    failures = report.failures
    submitted = list(_submitted(ops))

    # lost
    for op, spec, job_id, outcome in submitted:
        if outcome != OK or job_id is None:
            continue
        job = jobs.get(job_id)
        if job is None:
            failures["lost"].append({"job_id": job_id, "op_id": op.op_id, "why": "missing after the run"})
        elif job.get("state") not in TERMINAL:
            failures["lost"].append({"job_id": job_id, "op_id": op.op_id, "why": f"still {job.get('state')}"})

    # duplicated
    ids_by_key: dict[str, set] = defaultdict(set)
    for op, spec, job_id, outcome in submitted:
        key = spec.get("idempotency_key")
        if key and job_id:
            ids_by_key[key].add(job_id)
    for job_id, job in jobs.items():
        if job.get("idempotency_key"):
            ids_by_key[job["idempotency_key"]].add(job_id)
    for key, ids in ids_by_key.items():
        if len(ids) > 1:
            failures["duplicated"].append({"idempotency_key": key, "job_ids": sorted(ids)})

    # unknown submits: did they land? (by idempotency key or by the payload's unique token)
    by_token = {}
    for job_id, job in jobs.items():
        payload = job.get("payload")
        if isinstance(payload, dict) and payload.get("token"):
            by_token[payload["token"]] = job_id
    for op, spec, job_id, outcome in submitted:
        if outcome != UNKNOWN:
            continue
        key, token = spec.get("idempotency_key"), _payload_token(spec)
        landed = bool((key and ids_by_key.get(key)) or (token and token in by_token))
        report.unknown_submits["landed" if landed else "not_landed"] += 1

    leases = _leases(ops)
    writes = _per_job_writes(ops)

    # double_completed
    for job_id, items in writes.items():
        acks = [(op, args) for op, args, outcome in items if outcome == OK and op.kind in ("ack", "ack_batch")]
        redrives = [op for op, args, outcome in items if op.kind == "retry" and outcome in (OK, UNKNOWN)]
        acks.sort(key=lambda pair: pair[0].invoke_t)
        for (first, _), (second, _) in zip(acks, acks[1:]):
            if not any(first.complete_t <= r.invoke_t <= second.invoke_t for r in redrives):
                failures["double_completed"].append({"job_id": job_id, "why": "acked twice",
                                                     "op_ids": [first.op_id, second.op_id]})
        job_leases = leases.get(job_id, [])
        for op, args in acks:
            token = args.get("lease_token")
            if not token:
                continue  # a token-less (seed) ack cannot be checked for staleness
            mine = next((lease for lease in job_leases if lease.token == token), None)
            if mine is None:
                continue
            newer = [lease for lease in job_leases if lease.attempt > mine.attempt
                     and lease.op.complete_t < op.invoke_t]
            if newer:
                failures["double_completed"].append({"job_id": job_id, "why": "ack accepted with a stale token",
                                                     "ack_op": op.op_id, "token": token,
                                                     "newer_lease_op": newer[0].op.op_id})

    # overlapping leases, early leases
    submit_run_at: dict[str, int] = {}
    for op, spec, job_id, outcome in submitted:
        if outcome != OK or not job_id:
            continue
        if op.kind == "submit" and op.status == 201 and isinstance(op.result, dict):
            submit_run_at[job_id] = _ms(op.result.get("run_at"))  # the answer of the submit that made the job
        elif job_id in jobs and not spec.get("run_at"):
            # A batch item, or an idempotent repeat (200): that answer shows the job as it is now, and a nack
            # or an expired lease since may have moved run_at on. The store set run_at = created_at + delay.
            created = _ms(jobs[job_id].get("created_at"))
            if created is not None:
                submit_run_at.setdefault(job_id, created + (spec.get("delay_ms") or 0))
    for job_id, job_leases in leases.items():
        items = writes.get(job_id, [])
        for earlier, later in zip(job_leases, job_leases[1:]):
            if earlier.granted_ms is None or later.granted_ms is None:
                continue
            end = earlier.until_ms
            extends = [(op, args) for op, args, outcome in items if op.kind == "extend" and outcome == OK
                       and args.get("lease_token") == earlier.token and isinstance(op.result, dict)]
            if extends:
                latest = max(extends, key=lambda pair: pair[0].invoke_t)
                end = _ms(latest[0].result.get("lease_until")) or end
            released = any(op.kind in ("ack", "ack_batch", "nack", "cancel") and outcome in (OK, UNKNOWN)
                           and (op.kind == "cancel" or args.get("lease_token") == earlier.token)
                           and op.invoke_t <= later.op.complete_t
                           for op, args, outcome in items)
            if later.granted_ms < end and not released:
                failures["overlapping_leases"].append({
                    "job_id": job_id, "earlier": {"attempt": earlier.attempt, "until": earlier.until_ms,
                                                  "op": earlier.op.op_id},
                    "later": {"attempt": later.attempt, "granted": later.granted_ms, "op": later.op.op_id}})
        for previous, lease in zip([None, *job_leases], job_leases):
            if lease.granted_ms is None:
                continue
            not_before = submit_run_at.get(job_id) if previous is None else None
            if previous is not None:
                nacks = [op for op, args, outcome in items if op.kind == "nack" and outcome == OK
                         and args.get("lease_token") == previous.token and isinstance(op.result, dict)]
                if nacks:
                    not_before = _ms(nacks[-1].result.get("run_at"))
            if not_before is not None and lease.granted_ms < not_before and lease.attempt == \
                    (previous.attempt + 1 if previous else 1):
                failures["early_lease"].append({"job_id": job_id, "attempt": lease.attempt,
                                                "granted": lease.granted_ms, "run_at": not_before,
                                                "op": lease.op.op_id})

    # early dead
    for job_id, job in jobs.items():
        attempts, allowed = job.get("attempts", 0), 1 + job.get("max_retries", 0)
        if job.get("state") == "DEAD" and attempts < allowed:
            failures["early_dead"].append({"job_id": job_id, "attempts": attempts, "allowed": allowed})
        elif attempts > allowed:
            failures["early_dead"].append({"job_id": job_id, "attempts": attempts, "allowed": allowed,
                                           "why": "more attempts than allowed"})

    # replicas
    nodes = final.get("nodes", [])
    by_index: dict[int, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for node in nodes:
        by_index[node["applied_index"]][node["state_digest"]].append(node["node_id"])
    for index, digests in by_index.items():
        if len(digests) > 1:
            failures["divergent_replicas"].append({"applied_index": index, "digests": {d[:16]: n for d, n in
                                                                                        digests.items()}})
    expected = final.get("expected_nodes")
    if expected is not None and len(nodes) < expected:
        failures["divergent_replicas"].append({"why": f"only {len(nodes)} of {expected} nodes reported"})

    # per-kind statistics
    duration = max(report.duration_s, 1e-9)
    by_kind: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_kind[op.kind].append(op)
    for kind, kind_ops in by_kind.items():
        latencies = sorted(op.latency_ms for op in kind_ops if op.outcome == OK)
        report.ops[kind] = {
            "count": len(kind_ops), "ok": len(latencies),
            "fail": sum(op.outcome == FAIL for op in kind_ops), "unknown": sum(op.outcome == UNKNOWN for op in kind_ops),
            "ok_per_s": len(latencies) / duration, "p50_ms": _percentile(latencies, 0.50),
            "p95_ms": _percentile(latencies, 0.95), "p99_ms": _percentile(latencies, 0.99)}

    # failovers: a fault that hit the leader -> the first ok write sent after it
    ok_writes = sorted((op.invoke_t, op.complete_t) for op in ops if op.outcome == OK and (
        op.kind in WRITE_KINDS or (op.kind == "lease" and isinstance(op.result, dict)
                                   and (op.result.get("jobs") or op.result.get("job_id")))))
    for fault in history.faults:
        if not fault.detail.get("leader"):
            continue
        after = min((done for sent, done in ok_writes if sent > fault.t), default=None)
        report.failovers.append({"t": fault.t, "fault": fault.fault, "node": fault.node,
                                 "seconds": None if after is None else after - fault.t})
    return report


def main(argv: list[str] | None = None) -> int:
    """python -m raftqueue.chaos.checker HISTORY.jsonl FINAL.json"""
    import orjson
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    history = History.read(args[0])
    with open(args[1], "rb") as f:
        final = orjson.loads(f.read())
    report = check(history, final)
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
