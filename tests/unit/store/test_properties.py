"""Hypothesis stateful tests: random command sequences against the indexed store, a twin, and the model.

- the indexed store and the simple reference model return the same results and hold the same jobs;
- two stores fed the same commands have the same digest (determinism);
- a store restored from a snapshot taken mid-sequence and fed the rest ends equal to the original;
- after every step: a job is in exactly the indexes its state implies, no RUNNING job is leasable, the next
  lease is the minimum of the lease order, attempts never exceed 1 + max_retries, and terminal states are
  left only through retry.
"""
from __future__ import annotations

import copy
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from raftqueue.store import JobStore
from raftqueue.store.model import RETRY, RUNNING, SCHEDULED, TERMINAL
from tests.unit.store.reference import ReferenceStore

LONG = os.environ.get("RAFTQUEUE_LONG") == "1"
QUEUES = ["a", "b", "c"]


def strip_messages(value):
    if isinstance(value, dict):
        return {k: strip_messages(v) for k, v in value.items() if k != "message"}
    if isinstance(value, list):
        return [strip_messages(v) for v in value]
    return value


class StoreMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.store = JobStore()
        self.twin = JobStore()
        self.model = ReferenceStore()
        self.now = 1_000_000
        self.log: list[dict] = []
        self.ids: list[str] = []
        self.tokens: list[str] = []
        self.keys = [f"k{i}" for i in range(4)]
        self.next_id = 0
        self.lease_no = 0
        self.checkpoint: tuple[int, bytes] | None = None
        self.last_kind = None
        self.terminal_before: dict[str, str] = {}

    # ----- plumbing ----------------------------------------------------------------------------------------------
    def run(self, command: dict) -> dict:
        command = {"v": 1, "now": self.now, **command}
        self.terminal_before = {j: job.state for j, job in self.store.jobs.items() if job.state in TERMINAL}
        got = self.store.apply(copy.deepcopy(command))
        twin = self.twin.apply(copy.deepcopy(command))
        want = self.model.apply(copy.deepcopy(command))
        assert got == twin
        assert strip_messages(got) == strip_messages(want), (command, got, want)
        self.log.append(command)
        self.last_kind = command["kind"]
        for job in got.get("jobs", []) if isinstance(got.get("jobs"), list) else []:
            if isinstance(job, dict) and "lease_token" in job:
                self.tokens.append(job["lease_token"])
        return got

    def new_id(self) -> str:
        self.next_id += 1
        return f"j{self.next_id:04d}"

    def pick_id(self, data) -> str:
        if self.ids and data.draw(st.integers(0, 9)) > 0:
            return data.draw(st.sampled_from(self.ids))
        return "missing"

    def job_spec(self, data) -> dict:
        job_id = self.new_id()
        spec = {"job_id": job_id, "payload": data.draw(st.sampled_from(['1', '"x"', '{"a":[1,2]}', "null"])),
                "queue": data.draw(st.sampled_from(QUEUES)), "priority": data.draw(st.integers(-2, 2)),
                "max_retries": data.draw(st.integers(0, 2))}
        if data.draw(st.booleans()):
            spec["delay_ms"] = data.draw(st.sampled_from([0, 100, 5000]))
        if data.draw(st.integers(0, 4)) == 0:
            spec["lease_ms"] = data.draw(st.sampled_from([50, 2000]))
        if data.draw(st.integers(0, 3)) == 0:
            spec["idempotency_key"] = data.draw(st.sampled_from(self.keys))
        if data.draw(st.integers(0, 3)) == 0:
            spec["backoff"] = {"base_ms": 10, "max_ms": data.draw(st.sampled_from([10, 1000]))}
        if self.ids and data.draw(st.integers(0, 3)) == 0:
            spec["depends_on"] = data.draw(st.lists(st.sampled_from(self.ids + ["ghost"]), max_size=2))
        if data.draw(st.integers(0, 5)) == 0:
            spec["tags"] = {"team": data.draw(st.sampled_from(["x", "y"]))}
        return spec

    def harvest(self, result: dict) -> None:
        for key in ("job_id",):
            if isinstance(result.get(key), str) and result[key] not in self.ids:
                self.ids.append(result[key])
        for job_id in result.get("job_ids", []) or []:
            if job_id not in self.ids:
                self.ids.append(job_id)

    # ----- rules -------------------------------------------------------------------------------------------------
    @rule(step=st.sampled_from([0, 1, 10, 60, 500, 3000, 40_000]))
    def time_passes(self, step: int) -> None:
        self.now += step

    @rule(back=st.sampled_from([1, 1000, 50_000]))
    def leader_clock_behind(self, back: int) -> None:
        self.now -= back  # a new leader with a slower clock: the store clock must not move back

    @rule(data=st.data())
    def submit(self, data) -> None:
        self.harvest(self.run({"kind": "submit", **self.job_spec(data)}))

    @rule(data=st.data())
    def submit_more(self, data) -> None:
        self.harvest(self.run({"kind": "submit", **self.job_spec(data)}))

    @rule(data=st.data())
    def submit_batch(self, data) -> None:
        jobs = [self.job_spec(data) for _ in range(data.draw(st.integers(1, 4)))]
        if data.draw(st.integers(0, 6)) == 0 and len(jobs) > 1:
            jobs[-1]["job_id"] = jobs[0]["job_id"]  # a duplicate id: the whole batch must be refused
        self.harvest(self.run({"kind": "submit_batch", "jobs": jobs}))

    @rule(data=st.data())
    def lease(self, data) -> None:
        self.lease_no += 1
        self.run({"kind": "lease", "queues": data.draw(st.lists(st.sampled_from(QUEUES), max_size=2, unique=True)),
                  "max_jobs": data.draw(st.integers(1, 3)),
                  "lease_ms": data.draw(st.sampled_from([None, 100, 1000, 10_000])),
                  "default_lease_ms": 2000, "worker_id": "w", "token_base": f"t{self.lease_no}"})

    @rule(data=st.data())
    def lease_any(self, data) -> None:
        self.lease_no += 1
        self.run({"kind": "lease", "queues": [], "max_jobs": data.draw(st.integers(1, 4)), "lease_ms": None,
                  "default_lease_ms": data.draw(st.sampled_from([100, 5000])), "worker_id": None,
                  "token_base": f"t{self.lease_no}"})

    @precondition(lambda self: any(job.state == RUNNING for job in self.store.jobs.values()))
    @rule(data=st.data())
    def worker_finishes(self, data) -> None:
        """A worker holding a live lease acks, nacks or extends with its own token (the common case)."""
        running = sorted(j for j, job in self.store.jobs.items() if job.state == RUNNING)
        job_id = data.draw(st.sampled_from(running))
        token = self.store.jobs[job_id].lease_token
        action = data.draw(st.sampled_from(["ack", "ack", "nack", "extend", "release"]))
        if action == "ack":
            self.run({"kind": "ack", "job_id": job_id, "lease_token": token, "result": '"ok"'})
        elif action == "release":
            self.run({"kind": "release", "job_id": job_id, "lease_token": token})
        elif action == "nack":
            self.run({"kind": "nack", "job_id": job_id, "lease_token": token, "error": "failed",
                      "retry_in_ms": data.draw(st.sampled_from([None, 0, 50]))})
        else:
            self.run({"kind": "extend", "job_id": job_id, "lease_token": token,
                      "lease_ms": data.draw(st.sampled_from([100, 5000])), "progress": 10, "checkpoint": "[1]"})

    def token(self, data) -> str | None:
        choice = data.draw(st.integers(0, 5))
        if choice == 0:
            return None
        if choice == 1 or not self.tokens:
            return "wrong"
        return data.draw(st.sampled_from(self.tokens[-6:]))

    def running_id(self, data) -> str:
        running = [j for j, job in self.store.jobs.items() if job.state == RUNNING]
        if running and data.draw(st.booleans()):
            return data.draw(st.sampled_from(sorted(running)))
        return self.pick_id(data)

    def token_for(self, job_id: str, data) -> str | None:
        job = self.store.jobs.get(job_id)
        if job is not None and job.lease_token and data.draw(st.integers(0, 3)) > 0:
            return job.lease_token
        return self.token(data)

    @rule(data=st.data())
    def ack(self, data) -> None:
        job_id = self.running_id(data)
        cmd = {"kind": "ack", "job_id": job_id, "lease_token": self.token_for(job_id, data)}
        if data.draw(st.booleans()):
            cmd["result"] = '"done"'
        else:
            cmd["result_error"] = data.draw(st.sampled_from([None, "soft failure"]))
        self.run(cmd)

    @rule(data=st.data())
    def ack_batch(self, data) -> None:
        acks = []
        for _ in range(data.draw(st.integers(1, 3))):
            job_id = self.running_id(data)
            acks.append({"job_id": job_id, "lease_token": self.token_for(job_id, data), "result": "1"})
        self.run({"kind": "ack_batch", "acks": acks})

    @rule(data=st.data())
    def nack(self, data) -> None:
        job_id = self.running_id(data)
        self.run({"kind": "nack", "job_id": job_id, "lease_token": self.token_for(job_id, data), "error": "boom",
                  "retry_in_ms": data.draw(st.sampled_from([None, None, 0, 250]))})

    @rule(data=st.data())
    def release(self, data) -> None:
        job_id = self.running_id(data)
        self.run({"kind": "release", "job_id": job_id, "lease_token": self.token_for(job_id, data)})

    @rule(data=st.data())
    def extend(self, data) -> None:
        job_id = self.running_id(data)
        self.run({"kind": "extend", "job_id": job_id, "lease_token": self.token_for(job_id, data),
                  "lease_ms": data.draw(st.sampled_from([10, 1000, 20_000])),
                  "progress": data.draw(st.sampled_from([None, 50])),
                  "checkpoint": data.draw(st.sampled_from([None, '{"page":2}']))})

    @rule(data=st.data())
    def cancel(self, data) -> None:
        self.run({"kind": "cancel", "job_id": self.pick_id(data), "reason": data.draw(st.sampled_from([None, "r"]))})

    @rule(data=st.data())
    def retry(self, data) -> None:
        self.run({"kind": "retry", "job_id": self.pick_id(data), "reset_attempts": data.draw(st.booleans())})

    @rule(queue=st.sampled_from([None, *QUEUES]))
    def retry_dead(self, queue) -> None:
        self.run({"kind": "retry_dead", "queue": queue})

    @rule(queue=st.sampled_from(QUEUES), pause=st.sampled_from([True, False, False, False]))
    def pause_or_resume(self, queue, pause) -> None:
        self.run({"kind": "pause_queue" if pause else "resume_queue", "queue": queue})

    @rule()
    def expire(self) -> None:
        self.run({"kind": "expire"})

    @rule(retention=st.sampled_from([0, 1000, 100_000, 10 ** 9, 10 ** 9]))
    def purge(self, retention) -> None:
        self.run({"kind": "purge", "retention_ms": retention})
        self.ids = [j for j in self.ids if j in self.store.jobs]

    @rule(bad=st.sampled_from([{"kind": "explode"}, {"kind": "submit", "job_id": 5}, {"kind": "ack"},
                               {"kind": "lease", "max_jobs": "x", "token_base": "t"}, {"kind": "submit_batch"},
                               {"kind": "purge"}, {"kind": "extend", "job_id": "j0001"}, "not a dict",
                               {"kind": "noop", "v": 99}, {"kind": "noop", "now": -1}]))
    def malformed(self, bad) -> None:
        before = self.store.digest()
        if isinstance(bad, dict):
            got = self.store.apply({"v": 1, "now": self.now + 99_999, **bad})
            self.twin.apply({"v": 1, "now": self.now + 99_999, **bad})
        else:
            got = self.store.apply(bad)
            self.twin.apply(bad)
        assert got["error"]["code"] == "validation_error"
        assert self.store.digest() == before  # not even the clock moved

    @precondition(lambda self: self.checkpoint is None)
    @rule()
    def take_snapshot(self) -> None:
        self.checkpoint = (len(self.log), self.store.snapshot())

    # ----- invariants --------------------------------------------------------------------------------------------
    @invariant()
    def same_as_model(self) -> None:
        store, model = self.store, self.model
        assert store.clock == model.clock
        assert sorted(store.jobs) == sorted(model.jobs)
        for job_id in store.jobs:
            assert store.get(job_id) == model.view(job_id), job_id
        assert store.by_state == model.by_state()
        assert store.next_due_ms() == model.next_due()
        for state in (None, "READY", "DEAD"):
            for queue in (None, "a"):
                page, _ = store.list_jobs(state=state, queue=queue, limit=500)
                assert [j["job_id"] for j in page] == model.newest_first(state, queue)

    @invariant()
    def indexes_match_states(self) -> None:
        store = self.store
        ready_entries = {(e[3], e[4]) for index in store.ready.heaps.values() for e in index.entries()}
        promo_entries = {(e[1], e[2]) for e in store.promotion.heap}
        expiry_entries = {(e[1], e[2]) for e in store.expiry.heap}
        listed = {(k, key[1]) for k, lst in store.listing.lists.items() for key in lst}
        dead = {j for d in store.dead_by_queue.values() for j in d}
        for job_id, job in store.jobs.items():
            mine = (job_id, job.ver)
            assert ((job.queue, job.state), job_id) in listed
            assert (mine in ready_entries) == (job.state == "READY"), job_id
            assert (mine in expiry_entries) == (job.state == RUNNING), job_id
            waits_for_time = job.state == RETRY or (job.state == SCHEDULED and job.waiting == 0)
            assert (mine in promo_entries) == waits_for_time, job_id
            assert (job_id in dead) == (job.state == "DEAD")
            assert job.attempts <= 1 + job.max_retries
            if job.state == RUNNING:
                assert job.lease_until is not None and job.lease_token is not None
            else:
                assert job.lease_token is None
        assert len(listed) == len(store.jobs)
        for key, job_id in store.idempotency.items():
            assert store.jobs[job_id].idempotency_key == key

    @invariant()
    def terminal_states_are_sticky(self) -> None:
        for job_id, state in self.terminal_before.items():
            job = self.store.jobs.get(job_id)
            if job is not None and job.state != state:
                assert self.last_kind in ("retry", "retry_dead"), (job_id, state, job.state, self.last_kind)

    @invariant()
    def deterministic(self) -> None:
        assert self.store.digest() == self.twin.digest()

    def teardown(self) -> None:
        if getattr(self, "checkpoint", None) is None:
            return
        position, snapshot = self.checkpoint
        restored = JobStore.restore(snapshot)
        for command in self.log[position:]:
            restored.apply(copy.deepcopy(command))
        assert restored.digest() == self.store.digest()
        again = JobStore.restore(self.store.snapshot())
        assert again.digest() == self.store.digest()


StoreMachine.TestCase.settings = settings(
    max_examples=500 if LONG else 100, stateful_step_count=80 if LONG else 50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
TestStoreMachine = StoreMachine.TestCase
