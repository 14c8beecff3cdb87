"""LeaseGate's claim accounting over a real JobStore: a lease is proposed only while an unclaimed job is
runnable, a fully claimed queue waits for the leases in flight, and nothing is refused that is still there.

Unit test of the gate alone (the leader's side of api/lease_gate.py); that no empty lease reaches the log of a
real cluster is checked in tests/integration/test_api_routes.py."""
from __future__ import annotations

import asyncio
import contextlib

from raftqueue.api.lease_gate import LeaseGate
from raftqueue.store import JobStore
from raftqueue.store.store import MANY

T0 = 1_700_000_000_000


class _Clock:
    def __init__(self) -> None:
        self.ms = T0

    def now_ms(self) -> int:
        return self.ms


class _Replica:
    """What the gate reads: the store (under `reading()`) and the clock."""

    def __init__(self) -> None:
        self.store = JobStore()
        self.clock = _Clock()
        self.n = 0

    @contextlib.contextmanager
    def reading(self):
        yield self.store

    def do(self, kind: str, **fields) -> dict:
        result = self.store.apply({"kind": kind, "v": 1, "now": self.clock.ms, **fields})
        assert "error" not in result, result
        return result

    def submit(self, queue: str = "q", **fields) -> str:
        self.n += 1
        return self.do("submit", job_id=f"j{self.n}", payload="1", queue=queue, **fields)["job_id"]

    def lease(self, queues: list[str], max_jobs: int = 1) -> list:
        self.n += 1
        return self.do("lease", queues=queues, max_jobs=max_jobs, token_base=f"t{self.n}")["jobs"]


def _lease(queues: list[str], max_jobs: int = 1) -> dict:
    return {"kind": "lease", "queues": queues, "max_jobs": max_jobs}


def test_runnable_count_counts_ready_jobs_of_unpaused_queues_and_flags_due_ones() -> None:
    r = _Replica()
    store = r.store
    assert store.runnable_count(["q"], T0) == 0 and store.runnable_count([], T0) == 0
    r.submit("q"), r.submit("q"), r.submit("other")
    assert store.runnable_count(["q"], T0) == 2
    assert store.runnable_count(["q", "other"], T0) == 3 and store.runnable_count([], T0) == 3
    r.do("pause_queue", queue="q")
    assert store.runnable_count(["q", "other"], T0) == 1
    r.do("resume_queue", queue="q")
    r.lease(["q"])
    assert store.runnable_count(["q"], T0) == 1
    r.submit("later", delay_ms=100)
    assert store.runnable_count(["later"], T0) == 0
    assert store.runnable_count(["later"], T0 + 100) == MANY  # due: the lease promotes it
    assert store.runnable_count(["q"], T0 + 100) == 1  # another queue's due job is not ours
    assert store.runnable_count([], T0 + 100) == 2 + MANY


async def test_claims_cover_the_runnable_jobs_and_the_next_lease_waits_for_them() -> None:
    r = _Replica()
    gate = LeaseGate(r, max_wait_s=5.0)
    r.submit(), r.submit()
    first = await gate.claim(_lease(["q"], max_jobs=5))
    assert first is not None and gate.claimed(["q"]) == 2  # up to max_jobs, but only what is there
    waiting = asyncio.create_task(gate.claim(_lease(["q"])))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # both jobs are claimed: no second lease is proposed meanwhile
    r.lease(["q"], max_jobs=5)  # the first lease commits and takes both
    with first:
        pass
    assert await asyncio.wait_for(waiting, 1) is None  # nothing left: answered without a proposal
    assert gate.not_proposed == 1 and gate.claimed(["q"]) == 0


async def test_a_lease_that_took_less_than_its_claim_leaves_the_rest_to_the_waiting_ones() -> None:
    r = _Replica()
    gate = LeaseGate(r, max_wait_s=5.0)
    r.submit(), r.submit()
    a = await gate.claim(_lease(["q"]))
    b = await gate.claim(_lease(["q"]))
    assert a is not None and b is not None and gate.claimed(["q"]) == 2
    c = asyncio.create_task(gate.claim(_lease(["q"])))
    await asyncio.sleep(0.05)
    assert not c.done()
    with a:  # this proposal failed (say, the leader changed): it leased nothing
        pass
    claim = await asyncio.wait_for(c, 1)
    assert claim is not None and gate.claimed(["q"]) == 2
    with b, claim:
        pass
    assert gate.claimed(["q"]) == 0 and gate.not_proposed == 0


async def test_a_fully_claimed_wait_is_bounded_and_an_empty_queue_answers_at_once() -> None:
    r = _Replica()
    gate = LeaseGate(r, max_wait_s=0.2)
    assert await gate.claim(_lease(["q"])) is None  # nothing runnable: no wait at all
    r.submit()
    held = await gate.claim(_lease(["q"]))
    started = asyncio.get_running_loop().time()
    assert await gate.claim(_lease(["q"])) is None
    assert 0.15 < asyncio.get_running_loop().time() - started < 1.0
    assert gate.not_proposed == 2
    assert held is not None
    with held:
        pass
    again = await gate.claim(_lease(["q"]))  # the job is still there (the held lease took nothing)
    assert again is not None


async def test_other_queue_lists_and_odd_commands_are_not_held_back() -> None:
    r = _Replica()
    gate = LeaseGate(r, max_wait_s=5.0)
    r.submit("q"), r.submit("p")
    q_claim = await gate.claim(_lease(["q"]))
    p_claim = await gate.claim(_lease(["p", "q"]))  # its own claims: one job of p or q is unclaimed for it
    assert q_claim is not None and p_claim is not None
    for odd in ({"kind": "lease"}, {"kind": "lease", "queues": "q"}, {"kind": "lease", "queues": ["q"],
                                                                     "max_jobs": True}):
        claim = await gate.claim(odd)  # not gated: the store judges it, as without the gate
        assert claim is not None
        with claim:
            pass
    with q_claim, p_claim:
        pass
    assert gate.claimed(["q"]) == 0 and gate.claimed(["p", "q"]) == 0
