"""Stale lease entries leave the expiry heap on every replica, not only where housekeeping asks for them.

A follower never calls `next_due_ms`; before trimming, its expiry heap kept one entry per lease ever applied,
and when it became leader its first housekeeping call dropped them all in one Raft tick."""
from __future__ import annotations

from raftqueue.store import JobStore
from raftqueue.store import store as store_module
from raftqueue.store.indexes import TimeIndex

T0 = 1_700_000_000_000


def _life_cycles(store: JobStore, rounds: int, batch: int) -> None:
    for r in range(rounds):
        now = T0 + r
        jobs = [{"job_id": f"j{r:05d}-{i:04d}", "payload": "{}", "queue": "q"} for i in range(batch)]
        assert "error" not in store.apply({"kind": "submit_batch", "v": 1, "now": now, "jobs": jobs})
        leased = store.apply({"kind": "lease", "v": 1, "now": now, "queues": ["q"], "max_jobs": batch,
                              "default_lease_ms": 30_000, "token_base": f"t{r}", "worker_id": "w"})["jobs"]
        acks = [{"job_id": j["job_id"], "lease_token": j["lease_token"]} for j in leased]
        assert "error" not in store.apply({"kind": "ack_batch", "v": 1, "now": now, "acks": acks})


def test_acked_leases_leave_the_expiry_heap_without_housekeeping():
    store = JobStore()
    _life_cycles(store, rounds=200, batch=100)  # 20,000 leases, all acked, no expire, no next_due_ms
    assert len(store.expiry.heap) <= 100
    assert store.next_due_ms() is None


def test_control_without_trimming_the_heap_keeps_every_lease(monkeypatch):
    monkeypatch.setattr(store_module, "TRIM_BUDGET", 0)
    store = JobStore()
    _life_cycles(store, rounds=50, batch=100)
    assert len(store.expiry.heap) == 5_000


def test_a_running_lease_is_kept_and_stops_the_trim_behind_it():
    store = JobStore()
    store.apply({"kind": "submit", "v": 1, "now": T0, "job_id": "held", "payload": "{}", "queue": "slow"})
    held = store.apply({"kind": "lease", "v": 1, "now": T0, "queues": ["slow"], "default_lease_ms": 1_000,
                        "token_base": "h", "worker_id": "w"})["jobs"]
    assert [j["job_id"] for j in held] == ["held"]
    _life_cycles(store, rounds=20, batch=10)  # later leases (30 s), acked: stale, behind the running one
    assert store.next_due_ms() == T0 + 1_000
    assert store.expiry.heap[0][1] == "held"


def test_first_gives_up_after_its_budget_and_the_next_call_goes_on():
    class Job:
        def __init__(self, job_id: str, ver: int) -> None:
            self.id, self.ver = job_id, ver
    index = TimeIndex()
    jobs = {}
    for n in range(10):
        index.push(100 + n, Job(f"stale{n}", 1))  # not in `jobs`: stale
    valid = Job("valid", 1)
    jobs["valid"] = valid
    index.push(500, valid)
    assert index.first(jobs, lambda job: True, budget=4) is None  # gave up: four dropped, six stale left
    assert len(index.heap) == 7
    assert index.first(jobs, lambda job: True)[0] == 500
    assert len(index.heap) == 1
