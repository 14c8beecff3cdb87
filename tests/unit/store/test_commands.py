"""Each command and transition of the job store, including every rejection (which must change nothing)."""
from __future__ import annotations

import pytest

from raftqueue.store import JobStore
from raftqueue.store.backoff import retry_delay_ms

T0 = 1_700_000_000_000


class Harness:
    def __init__(self) -> None:
        self.store = JobStore()
        self.now = T0
        self.events: list = []
        self.n = 0

    def do(self, kind: str, **fields) -> dict:
        return self.store.apply({"kind": kind, "v": 1, "now": fields.pop("now", self.now), **fields}, self.events)

    def submit(self, **fields) -> str:
        self.n += 1
        fields.setdefault("job_id", f"job{self.n:03d}")
        fields.setdefault("payload", '{"n":%d}' % self.n)
        result = self.do("submit", **fields)
        assert "error" not in result, result
        return result["job_id"]

    def lease(self, **fields) -> list[dict]:
        self.n += 1
        fields.setdefault("queues", [])
        fields.setdefault("token_base", f"tok{self.n}")
        fields.setdefault("default_lease_ms", 1000)
        return self.do("lease", **fields)["jobs"]

    def state(self, job_id: str) -> str:
        return self.store.get(job_id)["state"]

    def rejected(self, code: str, kind: str, **fields) -> dict:
        before = self.store.digest()
        result = self.do(kind, **fields)
        assert result["error"]["code"] == code, result
        assert result["error"]["message"]
        assert self.store.digest() == before, "a rejected command changed the state"
        return result


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_submit_ready_and_scheduled(h):
    a = h.submit()
    b = h.submit(delay_ms=500)
    c = h.submit(run_at=T0 - 10)
    assert [h.state(x) for x in (a, b, c)] == ["READY", "SCHEDULED", "READY"]
    assert h.store.get(b)["run_at"] == T0 + 500
    assert h.store.stats()["total_submits"] == 3 and h.store.stats()["runnable"] == 2


def test_submit_rejections(h):
    a = h.submit()
    h.rejected("validation_error", "submit", job_id=a, payload="1")          # id reuse
    h.rejected("validation_error", "submit", job_id="x", payload=5)          # payload must be JSON text
    h.rejected("validation_error", "submit", job_id="x", payload="1", priority="high")
    h.rejected("validation_error", "submit", job_id="x", payload="1", max_retries=-1)
    h.rejected("validation_error", "submit", job_id="x", payload="1", depends_on=["ghost"])
    h.rejected("validation_error", "submit", job_id="x", payload="1", tags={"a": 1})
    h.rejected("validation_error", "submit", job_id="x", payload="1", backoff={"base_ms": 9, "max_ms": 1})
    h.rejected("validation_error", "submit", payload="1")                    # no id
    h.rejected("validation_error", "frobnicate")
    h.rejected("validation_error", "submit", job_id="x", payload="1", v=2)


def test_clock_never_moves_back_and_rejections_keep_it(h):
    h.submit(now=T0 + 100)
    h.do("noop", now=T0)
    assert h.store.clock == T0 + 100
    h.rejected("not_found", "cancel", job_id="ghost", now=T0 + 5000)
    assert h.store.clock == T0 + 100


def test_idempotent_submit_returns_the_first_job(h):
    first = h.do("submit", job_id="a", payload="1", idempotency_key="order-1")
    again = h.do("submit", job_id="b", payload="2", idempotency_key="order-1")
    assert again == {**first, "duplicate": True}
    assert h.store.get("b") is None and h.store.stats()["total_submits"] == 1


def test_batch_is_all_or_nothing_with_repeats_inside(h):
    result = h.do("submit_batch", jobs=[{"job_id": "a", "payload": "1", "idempotency_key": "k"},
                                        {"job_id": "b", "payload": "2", "idempotency_key": "k"},
                                        {"job_id": "c", "payload": "3", "depends_on": ["a"]}])
    assert result == {"job_ids": ["a", "a", "c"], "states": ["READY", "READY", "SCHEDULED"],
                      "duplicates": [False, True, False]}
    bad = h.rejected("validation_error", "submit_batch", jobs=[{"job_id": "d", "payload": "1"},
                                                               {"job_id": "e", "payload": 7}])
    assert "jobs[1]" in bad["error"]["message"]
    h.rejected("validation_error", "submit_batch", jobs=[])
    assert h.store.get("d") is None


def test_lease_order_priority_run_at_created_at_id(h):
    low = h.submit(priority=1)
    late = h.submit(priority=5, run_at=T0 + 1)
    h.now += 2
    early = h.submit(priority=5, run_at=T0 - 100)
    tie_b = h.submit(job_id="zz", priority=5, run_at=T0 + 1)
    order = [j["job_id"] for j in h.lease(max_jobs=10)]
    assert order == [early, late, tie_b, low]


def test_lease_skips_paused_queues_and_unknown_queues(h):
    a = h.submit(queue="q1")
    h.submit(queue="q2")
    h.do("pause_queue", queue="q2")
    assert [j["job_id"] for j in h.lease(max_jobs=5)] == [a]
    assert h.lease(queues=["q2"]) == []
    h.do("resume_queue", queue="q2")
    assert len(h.lease(queues=["q2", "nope"])) == 1


def test_lease_promotes_due_scheduled_and_respects_dependencies(h):
    parent = h.submit()
    child = h.submit(depends_on=[parent])
    later = h.submit(delay_ms=50)
    assert [j["job_id"] for j in h.lease(max_jobs=5)] == [parent]
    h.now += 100
    assert [j["job_id"] for j in h.lease(max_jobs=5)] == [later]  # child still waits for parent
    token = h.store.jobs[parent].lease_token
    h.do("ack", job_id=parent, lease_token=token)
    assert h.state(child) == "READY"


def test_lease_token_fencing_and_token_less_ack(h):
    a = h.submit()
    job = h.lease(lease_ms=1000)[0]
    assert job["lease_token"].startswith("tok") and job["attempt"] == 1
    h.rejected("conflict", "ack", job_id=a, lease_token="wrong")
    h.rejected("conflict", "nack", job_id=a, lease_token="wrong", error="x")
    h.rejected("conflict", "extend", job_id=a, lease_token="wrong", lease_ms=10)
    h.rejected("not_found", "ack", job_id="ghost")
    assert h.do("ack", job_id=a)["state"] == "ACKED"  # seed-compatible: no token, live lease
    h.rejected("conflict", "ack", job_id=a)


def test_expired_lease_refuses_ack_then_expire_retries_and_old_token_stays_dead(h):
    a = h.submit(max_retries=2, backoff={"base_ms": 100, "max_ms": 100})
    token = h.lease(lease_ms=1000)[0]["lease_token"]
    h.now += 1000
    h.rejected("conflict", "ack", job_id=a, lease_token=token)
    h.rejected("conflict", "ack", job_id=a)
    result = h.do("expire")
    assert result == {"expired": 1, "dead": 0, "promoted": 0}
    job = h.store.get(a)
    assert job["state"] == "RETRY" and job["last_error"] == "lease expired" and job["attempts"] == 1
    assert job["run_at"] == h.now + retry_delay_ms(a, 1, 100, 100)
    h.now = job["run_at"]
    second = h.lease(lease_ms=1000)[0]
    assert second["attempt"] == 2 and second["lease_token"] != token
    h.rejected("conflict", "ack", job_id=a, lease_token=token)


def test_attempts_run_out_into_dead(h):
    a = h.submit(max_retries=1)
    for attempt in (1, 2):
        job = h.lease()[0]
        assert job["attempt"] == attempt
        result = h.do("nack", job_id=a, lease_token=job["lease_token"], error=f"e{attempt}", retry_in_ms=0)
    assert result["state"] == "DEAD"
    stats = h.store.stats()
    assert stats["total_dead"] == 1 and stats["total_retries"] == 1
    assert h.store.get(a)["attempts"] == 2 and h.store.get(a)["last_error"] == "e2"


def test_nack_backoff_is_exponential_capped_and_deterministic(h):
    delays = [retry_delay_ms("j", n, 1000, 5000) for n in range(1, 6)]
    assert delays == [retry_delay_ms("j", n, 1000, 5000) for n in range(1, 6)]
    for n, delay in enumerate(delays, start=1):
        full = min(5000, 1000 * 2 ** (n - 1))
        assert full // 2 <= delay <= full
    assert len({retry_delay_ms(f"j{i}", 1, 1000, 5000) for i in range(50)}) > 10  # jitter spreads jobs


def test_extend_sets_lease_progress_checkpoint(h):
    a = h.submit()
    token = h.lease(lease_ms=1000)[0]["lease_token"]
    h.now += 900
    assert h.do("extend", job_id=a, lease_token=token, lease_ms=5000, progress=30,
                checkpoint='{"i":3}') == {"job_id": a, "lease_until": h.now + 5000}
    h.now += 4000
    h.do("expire")
    assert h.state(a) == "RUNNING"  # the extension counted
    job = h.store.get(a)
    assert job["progress"] == 30 and job["checkpoint"] == '{"i":3}'
    h.rejected("validation_error", "extend", job_id=a, lease_token=token, lease_ms=10, progress=101)


def test_release_gives_the_job_back_without_using_the_attempt(h):
    a = h.submit(max_retries=0, priority=5)  # one attempt only: a nack would make it DEAD
    b = h.submit(priority=1)
    first = h.lease(max_jobs=1)[0]
    assert first["job_id"] == a and first["attempt"] == 1
    h.do("extend", job_id=a, lease_token=first["lease_token"], lease_ms=1000, progress=40, checkpoint='{"p":4}')
    h.rejected("conflict", "release", job_id=a, lease_token="someone-else")
    h.rejected("not_found", "release", job_id="nope", lease_token=first["lease_token"])
    h.rejected("validation_error", "release", job_id=a)  # no token: only the lease holder may release
    h.events.clear()
    h.now += 10
    assert h.do("release", job_id=a, lease_token=first["lease_token"]) == {"job_id": a, "state": "READY",
                                                                         "attempts": 0}
    assert h.events == [("released", a, "READY", "default")]
    job = h.store.get(a)
    assert job["lease_token"] is None and job["lease_until"] is None and job["attempts"] == 0
    assert job["progress"] == 40 and job["checkpoint"] == '{"p":4}' and job["run_at"] == T0
    h.rejected("conflict", "release", job_id=a, lease_token=first["lease_token"])  # not RUNNING any more
    again = h.lease(max_jobs=1)[0]  # it keeps its place in lease order, and the attempt counts from 1 again
    assert again["job_id"] == a and again["attempt"] == 1 and again["checkpoint"] == '{"p":4}'
    h.do("nack", job_id=a, lease_token=again["lease_token"], error="real failure")
    assert h.state(a) == "DEAD" and h.state(b) == "READY"


def test_release_of_an_expired_lease_is_refused(h):
    a = h.submit()
    token = h.lease(lease_ms=100)[0]["lease_token"]
    h.now += 100
    h.rejected("conflict", "release", job_id=a, lease_token=token)


def test_checkpoint_reaches_the_next_attempt(h):
    a = h.submit()
    token = h.lease()[0]["lease_token"]
    h.do("extend", job_id=a, lease_token=token, lease_ms=1000, checkpoint='{"page":7}')
    h.do("nack", job_id=a, lease_token=token, error="x", retry_in_ms=0)
    assert h.lease()[0]["checkpoint"] == '{"page":7}'


def test_cancel_from_every_open_state_and_not_from_terminal(h):
    waiting = h.submit(delay_ms=10_000)
    ready = h.submit()
    running = h.submit(queue="r")
    token = h.lease(queues=["r"])[0]["lease_token"]
    for job in (waiting, ready, running):
        assert h.do("cancel", job_id=job, reason="stop")["state"] == "CANCELLED"
    h.rejected("conflict", "ack", job_id=running, lease_token=token)  # the lease was revoked
    h.rejected("conflict", "cancel", job_id=ready)
    h.rejected("not_found", "cancel", job_id="ghost")
    assert h.store.get(ready)["last_error"] == "stop"


def test_terminal_states_are_sticky_except_retry(h):
    a = h.submit(max_retries=0)
    token = h.lease()[0]["lease_token"]
    h.do("ack", job_id=a, lease_token=token, result='"r"')
    h.rejected("conflict", "retry", job_id=a)  # ACKED is not redriven
    h.rejected("conflict", "cancel", job_id=a)
    h.rejected("conflict", "nack", job_id=a, lease_token=token, error="x")
    assert h.state(a) == "ACKED" and h.store.get(a)["result"] == '"r"'


def test_retry_redrive_grants_an_attempt_or_resets(h):
    a = h.submit(max_retries=0)
    h.do("nack", job_id=a, lease_token=h.lease()[0]["lease_token"], error="x")
    assert h.state(a) == "DEAD"
    assert h.do("retry", job_id=a) == {"job_id": a, "state": "READY"}
    job = h.lease()[0]
    assert job["attempt"] == 2 and job["max_retries"] == 1
    h.do("nack", job_id=a, lease_token=job["lease_token"], error="x")
    h.do("retry", job_id=a, reset_attempts=True)
    assert h.store.get(a)["attempts"] == 0
    h.rejected("conflict", "retry", job_id=a)  # READY is not redriven


def test_retry_dead_redrives_a_whole_queue(h):
    dead = []
    for queue in ("q1", "q1", "q2"):
        job_id = h.submit(queue=queue, max_retries=0)
        dead.append(job_id)
        h.do("nack", job_id=job_id, lease_token=h.lease(queues=[queue])[0]["lease_token"], error="x")
    assert h.do("retry_dead", queue="q1") == {"count": 2}
    assert [h.state(j) for j in dead] == ["READY", "READY", "DEAD"]
    assert h.do("retry_dead") == {"count": 1}
    assert h.do("retry_dead") == {"count": 0}


def test_dependents_of_a_failed_job_are_cancelled_transitively(h):
    root = h.submit(max_retries=0)
    child = h.submit(depends_on=[root])
    grandchild = h.submit(depends_on=[child])
    h.do("nack", job_id=root, lease_token=h.lease()[0]["lease_token"], error="x")
    assert [h.state(j) for j in (root, child, grandchild)] == ["DEAD", "CANCELLED", "CANCELLED"]
    assert root in h.store.get(child)["last_error"]
    h.rejected("validation_error", "submit", job_id="late", payload="1", depends_on=[root])


def test_dependent_with_future_run_at_waits_for_both(h):
    parent = h.submit()
    child = h.submit(depends_on=[parent], delay_ms=1000)
    h.do("ack", job_id=parent, lease_token=h.lease()[0]["lease_token"])
    assert h.state(child) == "SCHEDULED"
    assert h.store.next_due_ms() == T0 + 1000
    h.now += 1000
    assert h.do("expire")["promoted"] == 1 and h.state(child) == "READY"


def test_purge_drops_old_finished_jobs_and_their_keys(h):
    a = h.submit(idempotency_key="k1")
    b = h.submit()
    h.do("ack", job_id=a, lease_token=h.lease()[0]["lease_token"])
    assert h.store.next_purge_ms(1000) == T0 + 1000
    h.now += 999
    assert h.do("purge", retention_ms=1000) == {"purged": 0}
    h.now += 1
    assert h.do("purge", retention_ms=1000) == {"purged": 1}
    assert h.store.get(a) is None and h.state(b) == "READY"
    again = h.do("submit", job_id="new", payload="1", idempotency_key="k1")
    assert again["duplicate"] is False  # the key left with its job
    h.rejected("validation_error", "purge")


def test_listing_newest_first_with_cursor_and_filters(h):
    ids = [h.submit(queue="q" if i % 2 else "p") for i in range(7)]
    page, cursor = h.store.list_jobs(limit=3)
    assert [j["job_id"] for j in page] == ids[::-1][:3]
    page, cursor = h.store.list_jobs(limit=3, cursor=cursor)
    assert [j["job_id"] for j in page] == ids[::-1][3:6]
    page, cursor = h.store.list_jobs(limit=3, cursor=cursor)
    assert [j["job_id"] for j in page] == ids[:1] and cursor is None
    q_ids = [j["job_id"] for j in h.store.list_jobs(queue="q")[0]]
    assert q_ids == [i for i in ids[::-1] if h.store.get(i)["queue"] == "q"]
    assert h.store.list_jobs(state="DEAD") == ([], None)


def test_has_runnable_and_next_due(h):
    assert not h.store.has_runnable([], T0) and h.store.next_due_ms() is None
    h.submit(queue="later", delay_ms=100)
    assert not h.store.has_runnable(["later"], T0)
    assert h.store.has_runnable(["later"], T0 + 100)
    assert not h.store.has_runnable(["other"], T0 + 100)
    h.do("pause_queue", queue="later")
    assert not h.store.has_runnable(["later"], T0 + 100)


def test_events_describe_each_change(h):
    a = h.submit()
    token = h.lease()[0]["lease_token"]
    h.do("nack", job_id=a, lease_token=token, error="x", retry_in_ms=0)
    h.lease()
    assert [e[0] for e in h.events] == ["submitted", "leased", "nacked", "ready", "leased"]
    h.events.clear()
    h.rejected("conflict", "ack", job_id=a, lease_token=token)
    assert h.events == []


def test_snapshot_restore_digest_and_version_check(h):
    a = h.submit(tags={"t": "1"}, idempotency_key="k")
    h.submit(depends_on=[a])
    h.lease()
    snap = h.store.snapshot()
    restored = JobStore.restore(snap)
    assert restored.digest() == h.store.digest() and restored.snapshot() == snap
    assert restored.stats() == h.store.stats()
    with pytest.raises(ValueError):
        JobStore.restore(snap.replace(b'"version":3', b'"version":99'))


def test_apply_never_raises(h):
    for junk in (None, 5, [], {"kind": None}, {"kind": "lease"}, {"kind": "ack_batch", "acks": [1, None]},
                 {"kind": "submit_batch", "jobs": [None]}, {"kind": "submit", "job_id": "x", "payload": "1",
                                                            "tags": [1]}, {"kind": "lease", "token_base": "t",
                                                                           "queues": [1]}):
        result = h.store.apply(junk) if not isinstance(junk, dict) else h.store.apply({"now": 1, **junk})
        assert isinstance(result, dict)


def test_jobs_from_decoded_commands_share_queue_worker_and_time_objects():
    """Memory per job: a node applies commands decoded from JSON, which makes a new str for every value. The
    queue name and worker id are kept once, and a job without a delay shares the clock's int for created_at
    and run_at (about 150 bytes a job at a million jobs)."""
    import orjson

    store = JobStore()

    def apply(command: dict) -> dict:
        return store.apply(orjson.loads(orjson.dumps({"v": 1, "now": T0, **command})), [])
    apply({"kind": "submit_batch", "jobs": [{"job_id": f"j{i}", "payload": "1", "queue": "emails"} for i in range(3)]})
    apply({"kind": "submit", "job_id": "later", "payload": "1", "queue": "emails", "delay_ms": 5})
    for n in range(2):
        apply({"kind": "lease", "queues": ["emails"], "worker_id": "worker-7", "token_base": f"t{n}"})
    jobs = [store.jobs[f"j{i}"] for i in range(3)]
    assert jobs[0].queue == "emails" and all(job.queue is jobs[0].queue for job in jobs)
    assert jobs[0].worker_id == "worker-7" and jobs[0].worker_id is jobs[1].worker_id
    assert all(job.run_at is job.created_at for job in jobs)
    assert store.jobs["later"].run_at == T0 + 5


def test_rare_fields_are_kept_as_a_pair_until_a_second_one_is_set(h):
    """Most finished jobs carry one rare field (a result): a (name, value) pair, not a dict, 130 bytes less."""
    from raftqueue.store.model import Job

    job = Job()
    job.result = '"ok"'
    assert job.x == ("result", '"ok"') and job.result == '"ok"' and job.worker_id is None
    job.worker_id = "w1"
    assert job.x == {"result": '"ok"', "worker_id": "w1"} and job.result == '"ok"'
    job.result = None
    assert job.x == ("worker_id", "w1") and job.result is None
    job.worker_id = None
    assert job.x is None
    # A snapshot stores the same dict either way, and a restored store keeps the compact form.
    a, b = h.submit(), h.submit()
    for job_id in (a, b):
        token = h.lease()[0]["lease_token"]
        h.do("ack", job_id=job_id, lease_token=token, result='{"n":1}')
    h.store.jobs[b].progress = 50
    restored = JobStore.restore(h.store.snapshot())
    assert restored.jobs[a].x == ("result", '{"n":1}')
    assert restored.jobs[b].x == {"result": '{"n":1}', "progress": 50}
    assert restored.digest() == h.store.digest() and restored.get(a) == h.store.get(a)


def test_an_owner_revokes_its_keys_but_never_an_admin_key(h):
    for key_id, owner, key_type in (("adm", "team", "admin"), ("wrk", "team", "worker"), ("cli", "team", "client"),
                                    ("other", "elsewhere", "client")):
        h.do("create_key", key_id=key_id, name=key_id, owner_id=owner, type=key_type, scopes=[], salt="s", hash="h")
    h.rejected("forbidden", "revoke_own_key", key_id="adm", owner_id="team")
    h.rejected("forbidden", "revoke_own_key", key_id="other", owner_id="team")
    h.rejected("validation_error", "revoke_own_key", key_id="cli")  # the owner is required
    assert h.do("revoke_own_key", key_id="cli", owner_id="team")["revoked_at"] == h.now
    assert h.do("revoke_key", key_id="adm", owner_id=None)["revoked_at"] == h.now  # an admin's revocation
    # entries written before revoke_own_key existed keep their meaning on replay
    assert h.do("revoke_key", key_id="wrk", owner_id="team")["revoked_at"] == h.now
