"""The chaos checker on hand-written histories: it must flag every anomaly and pass clean runs."""
from __future__ import annotations

import pytest

from raftqueue.chaos.checker import FAILURE_CHECKS, check
from raftqueue.chaos.history import FAIL, OK, UNKNOWN, Fault, History, Op
from raftqueue.timefmt import to_rfc3339

T = 1_800_000_000_000  # server clock (ms)


class Run:
    """Builds a history: each op gets consecutive client times unless given."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.faults: list[Fault] = []
        self.t = 0.0
        self.jobs: dict[str, dict] = {}

    def op(self, kind, args, outcome=OK, result=None, client="c1", start=None, end=None, status=200) -> Op:
        self.t += 0.01
        start = self.t if start is None else start
        end = start + 0.005 if end is None else end
        self.t = max(self.t, end)
        op = Op(len(self.ops) + 1, client, "n1", kind, args, start, end, outcome, status if outcome == OK else None,
                result)
        self.ops.append(op)
        return op

    def submit(self, job_id, key=None, token=None, outcome=OK, run_at=T, repeat=False, **args) -> Op:
        body = {"payload": {"token": token or job_id}, **args}
        if key:
            body["idempotency_key"] = key
        result = {"job_id": job_id, "state": "READY", "run_at": to_rfc3339(run_at)} if outcome == OK else None
        return self.op("submit", body, outcome, result, status=200 if repeat else 201)

    def lease(self, job_id, token, attempt, granted, lease_ms=1000, outcome=OK) -> Op:
        result = {"job_id": job_id, "lease_token": token, "attempt": attempt,
                  "lease_until": to_rfc3339(granted + lease_ms)}
        return self.op("lease", {"queue": "q", "lease_ms": lease_ms}, outcome, result if outcome == OK else None)

    def ack(self, job_id, token, outcome=OK) -> Op:
        return self.op("ack", {"job_id": job_id, "lease_token": token}, outcome,
                       {"job_id": job_id, "state": "ACKED"} if outcome == OK else None)

    def final_job(self, job_id, state="ACKED", attempts=1, max_retries=3, key=None, token=None):
        self.jobs[job_id] = {"job_id": job_id, "state": state, "attempts": attempts, "max_retries": max_retries,
                             "created_at": to_rfc3339(T), "payload": {"token": token or job_id},
                             **({"idempotency_key": key} if key else {})}

    def check(self, nodes=None):
        nodes = nodes or [{"node_id": f"n{i}", "applied_index": 10, "state_digest": "d" * 64} for i in (1, 2, 3)]
        report = check(History.from_records(self.ops, self.faults, {"seed": 1, "nodes": 3}),
                       {"jobs": self.jobs, "missing": [], "nodes": nodes, "expected_nodes": 3})
        return report


def failed(report) -> set[str]:
    return {name for name in FAILURE_CHECKS if report.failures[name]}


# ----- clean histories ----------------------------------------------------------------------------------------
def test_clean_run_with_tricky_but_legal_cases_passes():
    r = Run()
    r.submit("a")
    r.lease("a", "t1", 1, T + 10, lease_ms=1000)
    r.op("extend", {"job_id": "a", "lease_token": "t1", "lease_ms": 5000}, OK,
         {"job_id": "a", "lease_until": to_rfc3339(T + 6000)})
    r.op("nack", {"job_id": "a", "lease_token": "t1"}, OK, {"job_id": "a", "state": "RETRY",
                                                              "run_at": to_rfc3339(T + 7000)})
    r.lease("a", "t2", 2, T + 7000)                       # a lease after a nack, at its run_at
    r.ack("a", "t2", outcome=UNKNOWN)                     # the ack's answer was lost ...
    r.ack("a", "t2", outcome=FAIL)                        # ... its retry says 409: it had applied
    r.final_job("a", attempts=2)
    r.submit("b")
    r.lease("b", "u1", 1, T + 20, lease_ms=500)           # this worker gives up: the lease expires
    r.lease("b", "u2", 2, T + 520 + 300)                  # re-leased after the first lease ended
    r.ack("b", "u2")
    r.final_job("b", attempts=2)
    r.submit("c", key="k-c", outcome=UNKNOWN)             # an unknown submit that landed (found by key)
    r.submit("c", key="k-c")
    r.lease("c", "v1", 1, T + 30)
    r.ack("c", "v1")
    r.final_job("c", key="k-c")
    r.submit(None, token="lost-in-transit", outcome=UNKNOWN)   # an unknown submit that never landed
    r.submit("d", max_retries=1)
    r.lease("d", "w1", 1, T + 40)
    r.op("nack", {"job_id": "d", "lease_token": "w1"}, OK, {"job_id": "d", "state": "RETRY",
                                                              "run_at": to_rfc3339(T + 50)})
    r.lease("d", "w2", 2, T + 60)
    r.op("nack", {"job_id": "d", "lease_token": "w2"}, OK, {"job_id": "d", "state": "DEAD", "run_at": None})
    r.final_job("d", state="DEAD", attempts=2, max_retries=1)
    r.faults.append(Fault(r.ops[3].invoke_t - 0.001, "kill", "n2", {"leader": True}))
    report = r.check()
    assert report.ok, report.render()
    assert report.unknown_submits == {"landed": 1, "not_landed": 1}
    assert report.render().splitlines()[-1] == "result: OK"
    assert report.ops["submit"]["count"] == 6 and report.failovers[0]["seconds"] is not None


# ----- each anomaly -------------------------------------------------------------------------------------------
def test_lost_missing_job():
    r = Run()
    r.submit("a")
    assert failed(r.check()) == {"lost"}


def test_lost_unfinished_job():
    r = Run()
    r.submit("a")
    r.final_job("a", state="READY", attempts=0)
    assert failed(r.check()) == {"lost"}


def test_lost_batch_item():
    r = Run()
    r.op("submit_batch", {"jobs": [{"payload": {"token": "x"}}, {"payload": {"token": "y"}}]}, OK,
         {"job_ids": ["x", "y"]})
    r.final_job("x")
    report = r.check()
    assert failed(report) == {"lost"} and report.failures["lost"][0]["job_id"] == "y"


def test_duplicated_idempotency_key():
    r = Run()
    r.submit("a", key="k")
    r.submit("b", key="k")
    r.final_job("a", key="k")
    r.final_job("b", key="k")
    assert failed(r.check()) == {"duplicated"}


def test_duplicated_seen_only_in_final_state():
    r = Run()
    r.submit("a", key="k", outcome=UNKNOWN)
    r.final_job("a", key="k")
    r.final_job("b", key="k")
    assert failed(r.check()) == {"duplicated"}


def test_double_completed_two_ok_acks():
    r = Run()
    r.submit("a")
    r.lease("a", "t1", 1, T + 10)
    r.ack("a", "t1")
    r.ack("a", "t1")
    r.final_job("a")
    assert failed(r.check()) == {"double_completed"}


def test_double_completed_stale_token_ack():
    r = Run()
    r.submit("a")
    r.lease("a", "t1", 1, T + 10, lease_ms=100)
    r.lease("a", "t2", 2, T + 200)
    r.ack("a", "t1")                                       # the old token was accepted
    r.final_job("a", attempts=2)
    assert "double_completed" in failed(r.check())


def test_batch_ack_items_count_as_acks():
    r = Run()
    r.submit("a")
    r.lease("a", "t1", 1, T + 10)
    r.op("ack_batch", {"acks": [{"job_id": "a", "lease_token": "t1"}]}, OK, {"results": [{"job_id": "a",
                                                                                          "state": "ACKED"}]})
    r.ack("a", "t1")
    r.final_job("a")
    assert failed(r.check()) == {"double_completed"}


def test_redrive_between_acks_is_allowed():
    r = Run()
    r.submit("a")
    r.lease("a", "t1", 1, T + 10)
    r.ack("a", "t1")
    r.op("retry", {"job_id": "a"}, OK, {"job_id": "a", "state": "READY"})
    r.lease("a", "t2", 2, T + 100)
    r.ack("a", "t2")
    r.final_job("a", attempts=2)
    assert r.check().ok


def test_overlapping_leases():
    r = Run()
    r.submit("a")
    r.lease("a", "t1", 1, T + 10, lease_ms=1000)
    r.lease("a", "t2", 2, T + 500, lease_ms=1000)          # granted while t1 was still live
    r.ack("a", "t2")
    r.final_job("a", attempts=2)
    assert failed(r.check()) == {"overlapping_leases"}


def test_overlap_counts_extensions():
    r = Run()
    r.submit("a")
    r.lease("a", "t1", 1, T + 10, lease_ms=1000)
    r.op("extend", {"job_id": "a", "lease_token": "t1", "lease_ms": 5000}, OK,
         {"job_id": "a", "lease_until": to_rfc3339(T + 5500)})
    r.lease("a", "t2", 2, T + 2000)                        # after t1's first end, before its extended end
    r.ack("a", "t2")
    r.final_job("a", attempts=2)
    assert failed(r.check()) == {"overlapping_leases"}


def test_release_by_nack_before_the_next_lease_is_fine_even_if_unknown():
    r = Run()
    r.submit("a")
    r.lease("a", "t1", 1, T + 10, lease_ms=10_000)
    r.op("nack", {"job_id": "a", "lease_token": "t1", "retry_in_ms": 0}, UNKNOWN)
    r.lease("a", "t2", 2, T + 100)
    r.ack("a", "t2")
    r.final_job("a", attempts=2)
    assert r.check().ok


def test_early_lease_before_run_at():
    r = Run()
    r.submit("a", run_at=T + 5000, delay_ms=5000)
    r.lease("a", "t1", 1, T + 100)
    r.ack("a", "t1")
    r.final_job("a")
    assert failed(r.check()) == {"early_lease"}


def test_idempotent_repeat_answered_after_a_nack_is_not_an_early_lease():
    """A keyed submit whose answer was lost lands; the job is leased and nacked; the client's retry is answered
    200 with the job as it is now (run_at moved on by the nack). Found by CI chaos seed 40480."""
    r = Run()
    r.submit("a", key="k", outcome=UNKNOWN)
    r.lease("a", "t1", 1, T + 10)
    r.op("nack", {"job_id": "a", "lease_token": "t1"}, OK, {"job_id": "a", "state": "RETRY",
                                                              "run_at": to_rfc3339(T + 2000)})
    r.submit("a", key="k", run_at=T + 2000, repeat=True)
    r.lease("a", "t2", 2, T + 2000)
    r.ack("a", "t2")
    r.final_job("a", attempts=2, key="k")
    assert r.check().ok


def test_early_lease_of_delayed_job_known_only_from_a_repeat():
    r = Run()
    r.submit("a", key="k", outcome=UNKNOWN, delay_ms=3000)
    r.submit("a", key="k", run_at=T + 3000, repeat=True, delay_ms=3000)
    r.lease("a", "t1", 1, T + 1000)
    r.ack("a", "t1")
    r.final_job("a", key="k")
    assert failed(r.check()) == {"early_lease"}


def test_early_lease_before_nack_backoff():
    r = Run()
    r.submit("a")
    r.lease("a", "t1", 1, T + 10)
    r.op("nack", {"job_id": "a", "lease_token": "t1"}, OK, {"job_id": "a", "state": "RETRY",
                                                              "run_at": to_rfc3339(T + 3000)})
    r.lease("a", "t2", 2, T + 1000)
    r.ack("a", "t2")
    r.final_job("a", attempts=2)
    assert failed(r.check()) == {"early_lease"}


def test_early_dead_and_too_many_attempts():
    r = Run()
    r.submit("a")
    r.final_job("a", state="DEAD", attempts=1, max_retries=3)
    assert failed(r.check()) == {"early_dead"}
    r = Run()
    r.submit("a")
    r.final_job("a", state="ACKED", attempts=5, max_retries=3)
    assert failed(r.check()) == {"early_dead"}


def test_divergent_replicas():
    r = Run()
    nodes = [{"node_id": "n1", "applied_index": 9, "state_digest": "a" * 64},
             {"node_id": "n2", "applied_index": 9, "state_digest": "b" * 64},
             {"node_id": "n3", "applied_index": 9, "state_digest": "a" * 64}]
    assert failed(r.check(nodes)) == {"divergent_replicas"}
    assert failed(r.check(nodes[:2] and [nodes[0]])) == {"divergent_replicas"}  # nodes missing


def test_different_indexes_are_not_divergence():
    r = Run()
    nodes = [{"node_id": "n1", "applied_index": 9, "state_digest": "a" * 64},
             {"node_id": "n2", "applied_index": 10, "state_digest": "b" * 64},
             {"node_id": "n3", "applied_index": 10, "state_digest": "b" * 64}]
    assert r.check(nodes).ok


def test_mixed_anomalies_are_all_reported_and_rendered(tmp_path):
    r = Run()
    r.submit("lost")
    r.submit("a", key="k")
    r.submit("b", key="k")
    r.final_job("a", key="k")
    r.final_job("b", key="k")
    report = r.check()
    assert failed(report) == {"lost", "duplicated"}
    assert report.render().splitlines()[-1] == "result: FAIL (lost, duplicated)"
    history = History.from_records(r.ops, r.faults, {"seed": 7})
    path = tmp_path / "h.jsonl"
    history.write(path)
    again = History.read(path)
    assert [op.op_id for op in again.ops] == [op.op_id for op in r.ops] and again.header["seed"] == 7


@pytest.mark.parametrize("check_name", FAILURE_CHECKS)
def test_every_check_has_a_test_that_trips_it(check_name):
    """Guard: the tests above must cover every named check (the list is the source of truth)."""
    covered = {"lost", "duplicated", "double_completed", "overlapping_leases", "early_lease", "early_dead",
               "divergent_replicas"}
    assert check_name in covered
