"""Every job route of API.md against a real 3-node cluster: through followers and the leader, with every
409 and 4xx path, read-your-writes on every node, and digests that agree once idle."""
from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from tests.support.api_cluster import Api, running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("api")) as cluster:
        yield cluster


@pytest.fixture
async def api(cluster):
    async with Api(cluster) as api:
        yield api


async def _leader_and_followers(api: Api) -> tuple[int, list[int]]:
    leader = await api.leader()
    return leader, [i for i in range(3) if i != leader]


async def _submit(api: Api, node: int, body: dict) -> dict:
    status, answer, headers = await api.post(node, "/jobs", body)
    assert status == 201, answer
    answer["_index"] = int(headers["X-Raft-Index"])
    return answer


async def _lease_job(api: Api, node: int, queue: str, **extra) -> dict:
    status, job, _ = await api.post(node, "/jobs/lease", {"queue": queue, **extra})
    assert status == 200, job
    return job


async def test_submit_through_every_node_and_read_back_everywhere(api):
    leader, followers = await _leader_and_followers(api)
    for node in [leader, *followers]:
        answer = await _submit(api, node, {"payload": {"n": node}, "queue": "rw"})
        assert answer["state"] == "READY" and answer["job_id"]
        for reader in range(3):
            status, job, _ = await api.get(reader, f"/jobs/{answer['job_id']}",
                                          params={"min_index": str(answer["_index"])})
            assert status == 200, job
            assert job["payload"] == {"n": node} and job["queue"] == "rw" and job["state"] == "READY"
    await api.wait_converged()


async def test_seed_client_flow_without_tokens(api):
    """The DJQ seed's exact calls: submit {payload, max_retries}, lease with no body, ack by id."""
    _, followers = await _leader_and_followers(api)
    node = followers[0]
    status, answer, _ = await api.post(node, "/jobs", {"payload": "process this data", "max_retries": 3})
    assert status == 201 and "job_id" in answer
    # drain the default queue until we lease our job (other tests may use 'default' too)
    for _ in range(20):
        status, job, _ = await api.request(node, "POST", "/jobs/lease")
        assert status == 200, job
        assert {"job_id", "payload", "lease_until", "attempt"} <= set(job)
        status, acked, _ = await api.post(node, f"/jobs/{job['job_id']}/ack", {"result": "processed successfully"})
        assert status == 200 and acked["state"] == "ACKED"
        if job["job_id"] == answer["job_id"]:
            break
    status, final, _ = await api.get(node, f"/jobs/{answer['job_id']}")
    assert final["state"] == "ACKED" and final["result"] == "processed successfully" and final["attempts"] == 1


async def test_lease_ack_nack_extend_cancel_retry_and_their_conflicts(api):
    leader, followers = await _leader_and_followers(api)
    f = followers[0]
    q = "life"
    job = (await _submit(api, f, {"payload": 1, "queue": q, "max_retries": 1,
                                  "backoff": {"base_ms": 10, "max_ms": 10}}))["job_id"]
    leased = await _lease_job(api, f, q, lease_ms=5000)
    assert leased["job_id"] == job and leased["attempt"] == 1 and leased["lease_token"]
    token = leased["lease_token"]
    # wrong token -> 409 on ack, nack and extend
    for verb, body in (("ack", {"lease_token": "nope"}), ("nack", {"lease_token": "nope", "error": "x"}),
                       ("extend", {"lease_token": "nope", "lease_ms": 1000})):
        status, answer, _ = await api.post(f, f"/jobs/{job}/{verb}", body)
        assert status == 409 and answer["error"]["code"] == "conflict", (verb, answer)
    # extend with progress and checkpoint
    status, answer, _ = await api.post(f, f"/jobs/{job}/extend", {"lease_token": token, "lease_ms": 8000,
                                                                  "progress": 40, "checkpoint": {"page": 3}})
    assert status == 200 and answer["lease_until"]
    # nack -> RETRY (attempt 1 of 2), then it comes back with the checkpoint
    status, answer, _ = await api.post(f, f"/jobs/{job}/nack", {"lease_token": token, "error": "boom"})
    assert status == 200 and answer["state"] == "RETRY", answer
    # the old token is dead now
    status, answer, _ = await api.post(f, f"/jobs/{job}/ack", {"lease_token": token})
    assert status == 409
    deadline = time.monotonic() + 10
    while True:
        status, leased2, _ = await api.post(f, "/jobs/lease", {"queue": q, "wait_ms": 1000})
        if status == 200:
            break
        assert time.monotonic() < deadline, leased2
    assert leased2["job_id"] == job and leased2["attempt"] == 2 and leased2["checkpoint"] == {"page": 3}
    # second nack uses the last attempt -> DEAD
    status, answer, _ = await api.post(f, f"/jobs/{job}/nack", {"lease_token": leased2["lease_token"], "error": "x"})
    assert status == 200 and answer["state"] == "DEAD"
    status, answer, _ = await api.post(leader, f"/jobs/{job}/cancel", {})
    assert status == 409  # terminal states are sticky
    status, answer, _ = await api.post(f, f"/jobs/{job}/retry", {"reset_attempts": True})
    assert status == 200 and answer["state"] == "READY"
    status, answer, _ = await api.post(f, f"/jobs/{job}/cancel", {"reason": "no longer needed"})
    assert status == 200 and answer["state"] == "CANCELLED"
    status, answer, _ = await api.post(f, f"/jobs/{job}/retry", {})
    assert status == 200
    leased3 = await _lease_job(api, f, q)
    status, answer, _ = await api.post(f, f"/jobs/{job}/cancel", {})
    assert status == 200 and answer["state"] == "CANCELLED"
    status, answer, _ = await api.post(f, f"/jobs/{job}/ack", {"lease_token": leased3["lease_token"]})
    assert status == 409  # a cancelled job's lease is revoked
    # unknown job ids
    for verb, body in (("ack", {"lease_token": "t"}), ("nack", {"lease_token": "t"}),
                       ("extend", {"lease_token": "t", "lease_ms": 1000}), ("cancel", {}), ("retry", {})):
        status, answer, _ = await api.post(f, f"/jobs/0190a0b0-0000-7000-8000-000000000000/{verb}", body)
        assert status == 404 and answer["error"]["code"] == "not_found", (verb, answer)
    status, answer, _ = await api.get(f, "/jobs/0190a0b0-0000-7000-8000-000000000000")
    assert status == 404


async def test_idempotent_submit_returns_the_first_job(api):
    _, followers = await _leader_and_followers(api)
    body = {"payload": {"x": 1}, "idempotency_key": f"order-{time.time_ns()}"}
    first = await _submit(api, followers[0], body)
    status, again, _ = await api.post(followers[1], "/jobs", body)
    assert status == 200 and again["job_id"] == first["job_id"]


async def test_release_through_followers_gives_the_job_back_without_an_attempt(api):
    leader, followers = await _leader_and_followers(api)
    q = f"rel{time.time_ns()}"
    job = await _submit(api, leader, {"payload": "r", "queue": q, "max_retries": 0})
    leased = await _lease_job(api, followers[0], q)
    assert leased["attempt"] == 1
    path = f"/jobs/{job['job_id']}/release"
    for bad in ({"lease_token": 5}, {"lease_token": leased["lease_token"], "error": "x"}, {}):
        status, answer, _ = await api.post(followers[1], path, bad)
        assert status == 400 and answer["error"]["code"] == "validation_error", answer
    status, answer, _ = await api.post(followers[1], path, {"lease_token": "wrong"})
    assert status == 409
    status, answer, headers = await api.post(followers[1], path, {"lease_token": leased["lease_token"]})
    assert status == 200 and answer == {"job_id": job["job_id"], "state": "READY", "attempts": 0}
    status, answer, _ = await api.post(followers[0], path, {"lease_token": leased["lease_token"]})
    assert status == 409  # not RUNNING any more
    status, seen, _ = await api.get(followers[0], f"/jobs/{job['job_id']}",
                                    params={"min_index": headers["X-Raft-Index"]})
    assert seen["state"] == "READY" and seen["attempts"] == 0 and seen.get("lease_until") is None
    again = await _lease_job(api, leader, q)
    assert again["job_id"] == job["job_id"] and again["attempt"] == 1


async def test_batch_submit_lease_and_ack(api):
    _, followers = await _leader_and_followers(api)
    f = followers[0]
    q = "batchq"
    status, answer, headers = await api.post(f, "/jobs/batch", {"jobs": [{"payload": i, "queue": q} for i in range(50)]})
    assert status == 201 and len(answer["job_ids"]) == 50 and "X-Raft-Index" in headers
    status, leased, _ = await api.post(f, "/jobs/lease", {"queue": q, "max_jobs": 100})
    assert status == 200 and len(leased["jobs"]) == 50
    acks = [{"job_id": j["job_id"], "lease_token": j["lease_token"], "result": j["payload"] * 2}
            for j in leased["jobs"]]
    acks.append({"job_id": acks[0]["job_id"], "lease_token": "stale"})
    status, answer, _ = await api.post(f, "/jobs/ack", {"acks": acks})
    assert status == 200
    results = answer["results"]
    assert [r.get("state") for r in results[:50]] == ["ACKED"] * 50
    assert results[50]["error"]["code"] == "conflict"
    # a bad item fails the whole batch submit, nothing is created
    before = (await api.get(f, "/stats"))[1]["total"]
    status, answer, _ = await api.post(f, "/jobs/batch", {"jobs": [{"payload": 1}, {"payload": 2, "priority": "x"}]})
    assert status == 400 and "jobs[1].priority" in answer["error"]["message"]
    assert (await api.get(f, "/stats"))[1]["total"] == before
    # an empty list form lease answers 200 with no jobs; the seed form answers 404 no_jobs
    status, answer, _ = await api.post(f, "/jobs/lease", {"queue": q, "max_jobs": 5})
    assert status == 200 and answer == {"jobs": []}
    status, answer, _ = await api.post(f, "/jobs/lease", {"queue": q})
    assert status == 404 and answer["error"]["code"] == "no_jobs"


async def test_priority_and_scheduling_order(api):
    leader, _ = await _leader_and_followers(api)
    q = "order"
    low = await _submit(api, leader, {"payload": "low", "queue": q, "priority": 1})
    high = await _submit(api, leader, {"payload": "high", "queue": q, "priority": 10})
    later = await _submit(api, leader, {"payload": "later", "queue": q, "priority": 100, "delay_ms": 1500})
    assert later["state"] == "SCHEDULED"
    got = [(await _lease_job(api, leader, q))["job_id"] for _ in range(2)]
    assert got == [high["job_id"], low["job_id"]]
    status, _, _ = await api.post(leader, "/jobs/lease", {"queue": q})
    assert status == 404  # the scheduled one is not due yet
    started = time.monotonic()
    status, job, _ = await api.post(leader, "/jobs/lease", {"queue": q, "wait_ms": 5000})
    assert status == 200 and job["job_id"] == later["job_id"]
    assert time.monotonic() - started < 4.5


async def test_long_poll_wakes_on_submit_through_another_node(api):
    leader, followers = await _leader_and_followers(api)
    q = f"lp{time.time_ns()}"
    poll = asyncio.create_task(api.post(followers[0], "/jobs/lease", {"queue": q, "wait_ms": 10000}))
    await asyncio.sleep(0.5)
    assert not poll.done()
    started = time.monotonic()
    job = await _submit(api, followers[1], {"payload": "wake", "queue": q})
    status, leased, _ = await poll
    assert status == 200 and leased["job_id"] == job["job_id"]
    assert time.monotonic() - started < 2.0


async def test_a_long_poll_whose_client_hung_up_leases_nothing(api):
    """A worker whose HTTP timeout is shorter than its wait_ms goes away while its poll is parked. The parked
    request must not take the next job: nobody would receive it, and the attempt it spent would make a job with
    max_retries 0 go DEAD without ever running. On the leader and through a follower alike."""
    leader, followers = await _leader_and_followers(api)
    for node in (leader, followers[0]):
        q = f"gone{time.time_ns()}"
        with pytest.raises(asyncio.TimeoutError):
            await api.post(node, "/jobs/lease", {"queue": q, "wait_ms": 20000}, timeout=1)
        await asyncio.sleep(0.2)
        job = await _submit(api, followers[1], {"payload": "for a live worker", "queue": q, "max_retries": 0})
        await asyncio.sleep(1.5)  # the parked request has woken (or re-checked) by now
        status, seen, _ = await api.get(leader, f"/jobs/{job['job_id']}", params={"consistency": "leader"})
        assert status == 200 and seen["state"] == "READY" and seen["attempts"] == 0, (node == leader, seen)
        leased = await _lease_job(api, node, q, wait_ms=2000)
        assert leased["job_id"] == job["job_id"] and leased["attempt"] == 1, leased


async def test_long_polls_through_both_followers_share_jobs_without_doubles(api):
    """Two workers long-poll through different followers; one job wakes both. The leader grants it to one;
    the other gets nothing, keeps waiting (its wait is not over) and takes the next job."""
    leader, followers = await _leader_and_followers(api)
    leader_id = (await api.cluster_status(leader, digest=False))["node_id"]
    q = f"flp{time.time_ns()}"
    polls = [asyncio.create_task(api.post(f, "/jobs/lease", {"queue": q, "wait_ms": 15000, "max_jobs": 5}))
             for f in followers]
    await asyncio.sleep(0.5)
    assert not any(poll.done() for poll in polls)
    first = await _submit(api, leader, {"payload": 1, "queue": q})
    done, pending = await asyncio.wait(polls, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1 and len(pending) == 1
    status, answer, headers = done.pop().result()
    assert status == 200 and [j["job_id"] for j in answer["jobs"]] == [first["job_id"]]
    assert headers["X-Raft-Leader"] == leader_id and int(headers["X-Raft-Index"]) > first["_index"]
    await asyncio.sleep(1.5)  # longer than a parked wait's one-second re-check
    assert not pending.copy().pop().done()
    second = await _submit(api, followers[0], {"payload": 2, "queue": q})
    status, answer, _ = await asyncio.wait_for(pending.pop(), 5)
    assert status == 200 and [j["job_id"] for j in answer["jobs"]] == [second["job_id"]]


async def _metric(api: Api, node: int, series: str) -> float:
    status, text, _ = await api.get(node, "/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{series} is not in /metrics")


async def test_long_polls_waiting_on_every_node_write_no_empty_lease(api):
    """Four long polls wait on each of the three nodes, and every new job wakes a waiter on each node at once.
    The leader writes a lease only while a job is left for it: each job goes to one poll, and no lease command
    in the log comes back empty (before the lease gate, two of every three did here)."""
    leader, followers = await _leader_and_followers(api)
    q = f"gate{time.time_ns()}"
    empty = 'raftqueue_lease_commands_total{result="empty"}'
    leased = 'raftqueue_lease_commands_total{result="leased"}'
    before = {name: await _metric(api, leader, name) for name in (empty, leased, "raftqueue_leases_not_proposed_total")}
    polls = [asyncio.create_task(api.post(node, "/jobs/lease", {"queue": q, "wait_ms": 4000}))
             for node in (leader, *followers) for _ in range(4)]
    await asyncio.sleep(0.5)
    submitted: list[str] = []
    for round_ in range(3):
        status, answer, _ = await api.post(followers[round_ % 2], "/jobs/batch",
                                           {"jobs": [{"payload": [round_, i], "queue": q} for i in range(2)]})
        assert status == 201, answer
        submitted += answer["job_ids"]
        await asyncio.sleep(0.3)
    answers = await asyncio.gather(*polls)
    got = [body["job_id"] for status, body, _ in answers if status == 200]
    assert sorted(got) == sorted(submitted)
    assert sorted(status for status, _, _ in answers) == [200] * 6 + [404] * 6
    await api.wait_converged()
    assert await _metric(api, leader, empty) == before[empty]
    assert await _metric(api, leader, leased) == before[leased] + 6
    assert await _metric(api, leader, "raftqueue_leases_not_proposed_total") > before[
        "raftqueue_leases_not_proposed_total"]
    for follower in followers:  # every replica applied the same lease commands
        assert await _metric(api, follower, empty) == await _metric(api, leader, empty)


async def test_lease_without_wait_through_a_follower_sees_the_leaders_state(api):
    """A poll without wait_ms is answered from the leader's state, not the follower's copy, which may not have
    applied the submit yet."""
    leader, followers = await _leader_and_followers(api)
    for round_ in range(5):
        q = f"nw{time.time_ns()}"
        job = await _submit(api, leader, {"payload": round_, "queue": q})
        leased = await _lease_job(api, followers[round_ % 2], q)
        assert leased["job_id"] == job["job_id"]


async def test_pause_and_resume_queue(api):
    leader, followers = await _leader_and_followers(api)
    q = f"pause{time.time_ns()}"
    await _submit(api, leader, {"payload": 1, "queue": q})
    status, answer, _ = await api.post(followers[0], f"/queues/{q}/pause")
    assert status == 200 and answer["paused"] is True
    status, _, _ = await api.post(leader, "/jobs/lease", {"queue": q})
    assert status == 404
    status, answer, _ = await api.post(followers[1], f"/queues/{q}/resume")
    assert status == 200 and answer["paused"] is False
    await _lease_job(api, leader, q)


async def test_dead_letter_redrive(api):
    leader, _ = await _leader_and_followers(api)
    q = f"dlq{time.time_ns()}"
    ids = [(await _submit(api, leader, {"payload": i, "queue": q, "max_retries": 0}))["job_id"] for i in range(3)]
    for _ in ids:
        job = await _lease_job(api, leader, q)
        status, answer, _ = await api.post(leader, f"/jobs/{job['job_id']}/nack", {"lease_token": job["lease_token"]})
        assert answer["state"] == "DEAD"
    status, listed, _ = await api.get(leader, "/jobs", params={"state": "DEAD", "queue": q})
    assert {j["job_id"] for j in listed["jobs"]} == set(ids)
    status, answer, _ = await api.post(leader, "/jobs/dead/retry", {"queue": q})
    assert status == 200 and answer["count"] == 3
    status, listed, _ = await api.get(leader, "/jobs", params={"state": "READY", "queue": q})
    assert {j["job_id"] for j in listed["jobs"]} == set(ids)


async def test_list_pagination_newest_first(api):
    leader, _ = await _leader_and_followers(api)
    q = f"page{time.time_ns()}"
    ids = [(await _submit(api, leader, {"payload": i, "queue": q}))["job_id"] for i in range(7)]
    seen, cursor = [], None
    while True:
        params = {"queue": q, "limit": "3"} | ({"cursor": cursor} if cursor else {})
        status, page, _ = await api.get(leader, "/jobs", params=params)
        assert status == 200
        seen += [j["job_id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))


BAD_BODIES = [
    (b"{not json", 400, "invalid_json", None),
    (b'"just a string"', 400, "validation_error", "body"),
    (orjson.dumps({"queue": "q"}), 400, "validation_error", "payload"),
    (orjson.dumps({"payload": 1, "priority": "high"}), 400, "validation_error", "priority"),
    (b'{"payload": 1, "priority": 1000000000000000000000000000000}', 400, "validation_error", "priority"),
    (b'{"payload": 1e400}', 400, "invalid_json", None),
    (orjson.dumps({"payload": 1, "max_retries": -1}), 400, "validation_error", "max_retries"),
    (orjson.dumps({"payload": 1, "delay_ms": -5}), 400, "validation_error", "delay_ms"),
    (orjson.dumps({"payload": 1, "run_at": "tomorrow"}), 400, "validation_error", "run_at"),
    (orjson.dumps({"payload": 1, "queue": "../etc"}), 400, "validation_error", "queue"),
    (orjson.dumps({"payload": 1, "colour": "red"}), 400, "validation_error", "colour"),
    (orjson.dumps({"payload": 1, "tags": {"a": 1}}), 400, "validation_error", "tags.a"),
    (orjson.dumps({"payload": 1, "depends_on": "x"}), 400, "validation_error", "depends_on"),
    (orjson.dumps({"payload": 1, "depends_on": ["0190a0b0-0000-7000-8000-000000000001"]}), 400,
     "validation_error", "depends_on"),
    (orjson.dumps({"payload": "x" * (1024 * 1024 + 10)}), 413, "payload_too_large", "payload"),
    (b'{"payload": "\xff\xfe"}', 400, "invalid_json", None),
    (b"[" * 5000 + b"]" * 5000, 400, "invalid_json", None),
]


@pytest.mark.parametrize("raw,status,code,field", BAD_BODIES)
async def test_bad_input_is_a_4xx_naming_the_field_and_changes_nothing(api, raw, status, code, field):
    _, followers = await _leader_and_followers(api)
    node = followers[0]
    before = (await api.get(node, "/stats", params={"consistency": "leader"}))[1]
    got, answer, _ = await api.post(node, "/jobs", raw=raw)
    assert got == status, answer
    assert answer["error"]["code"] == code
    if field:
        assert field in answer["error"]["message"]
    after = (await api.get(node, "/stats", params={"consistency": "leader"}))[1]
    assert after["total_submits"] == before["total_submits"]


async def test_unknown_routes_and_methods_are_json_errors(api):
    status, answer, _ = await api.get(0, "/nope")
    assert status == 404 and answer["error"]["code"] == "not_found"
    status, answer, _ = await api.request(0, "DELETE", "/jobs")
    assert status == 405 and answer["error"]["code"] == "method_not_allowed"
    status, answer, _ = await api.get(0, "/jobs", params={"limit": "100000"})
    assert status == 400 and "limit" in answer["error"]["message"]
    status, answer, _ = await api.get(0, "/stats", params={"min_index": "abc"})
    assert status == 400


async def test_a_body_that_cannot_be_decoded_is_a_400_on_every_node(api):
    """`Content-Encoding: gzip` (or deflate) on a body that is not: the client's mistake, so a 400, not a 500.
    (aiohttp's parser refuses a bad deflate stream itself, with a plain-text 400, before any route runs.)"""
    for node in range(3):
        for encoding in ("gzip", "deflate"):
            status, answer, _ = await api.request(node, "POST", "/jobs", raw=b'{"payload": 1}',
                                                  headers={"Content-Encoding": encoding,
                                                           "Content-Type": "application/json"})
            assert status == 400, (node, encoding, status, answer)
            if encoding == "gzip":
                assert answer["error"]["code"] == "bad_request", answer


async def test_health_live_ready_stats_cluster(api):
    for node in range(3):
        status, body, _ = await api.get(node, "/health")
        assert status == 200 and body == "OK"
        assert (await api.get(node, "/live"))[0] == 200
        status, ready, _ = await api.get(node, "/ready")
        assert status == 200 and ready["ready"] is True
        status, stats, _ = await api.get(node, "/stats")
        assert status == 200
        assert {"total", "by_state", "by_queue", "runnable", "scheduled", "total_submits", "total_acks",
                "total_retries", "total_dead"} <= set(stats)
    statuses = await api.wait_converged()
    leaders = {s["leader"] for s in statuses}
    assert len(leaders) == 1 and None not in leaders
    for s in statuses:
        assert {"node_id", "pid", "version", "role", "leader", "term", "commit_index", "applied_index",
                "state_digest", "members"} <= set(s)
        assert [m["id"] for m in s["members"]] == ["n1", "n2", "n3"]


async def test_events_stream_sends_stats_every_2_s_even_while_job_events_flow(api):
    """API.md: `event: stats` on connect and every 2 s. Job events every 0.2 s must not hold the stats back."""
    leader, followers = await _leader_and_followers(api)
    q = f"ssestats{time.time_ns()}"
    kinds: list[str] = []

    async def read(resp) -> None:
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kinds.append(line[7:])

    async with api.session.get(api.cluster.urls[followers[0]] + "/events", params={"token": api.key}) as resp:
        reader = asyncio.create_task(read(resp))
        for i in range(25):  # 5 s of job events, 0.2 s apart
            await _submit(api, leader, {"payload": i, "queue": q})
            await asyncio.sleep(0.2)
        reader.cancel()
    assert kinds.count("job") >= 20, kinds
    assert kinds.count("stats") >= 3, kinds  # on connect, and at least twice more in the 5 s


async def test_events_stream_shows_submits_and_resumes_from_last_event_id(api):
    leader, followers = await _leader_and_followers(api)
    q = f"sse{time.time_ns()}"
    url = api.cluster.urls[followers[0]] + "/events"
    seen: list[tuple[int, dict]] = []

    async def read_events(resp, want: int) -> None:
        event_id, kind = None, None
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "job":
                data = orjson.loads(line[6:])
                if data["queue"] == q:
                    seen.append((event_id, data))
                    if len(seen) >= want:
                        return

    async with api.session.get(url, params={"token": api.key}) as resp:  # EventSource style: ?token=
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        reader = asyncio.create_task(read_events(resp, 2))
        await asyncio.sleep(0.3)
        for i in range(2):
            await _submit(api, leader, {"payload": i, "queue": q})
        await asyncio.wait_for(reader, 10)
    assert [d["kind"] for _, d in seen] == ["submitted", "submitted"]
    first_id = seen[0][0]
    # Resume on another node from the first event: the second one is replayed.
    seen.clear()
    async with api.session.get(api.cluster.urls[followers[1]] + "/events",
                               headers={"Last-Event-ID": str(first_id), "Authorization": f"Bearer {api.key}"}) as resp:
        await asyncio.wait_for(read_events(resp, 1), 10)
    assert seen and seen[0][0] > first_id
