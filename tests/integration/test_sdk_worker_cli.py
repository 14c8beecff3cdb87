"""The SDK, the worker runtime, the CLI and /metrics against a real 3-node cluster (real processes, real kills)."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import orjson
import pytest

from raftqueue.client import AsyncClient, Client, Conflict, NotFound, Unauthorized, ValidationError
from raftqueue.worker import Worker
from tests.support.api_cluster import Api, make_cluster, running_cluster
from tests.support.procs import REPO


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with running_cluster(tmp_path_factory.mktemp("sdk"), extra_args=["--lease", "3s"]) as cluster:
        yield cluster


async def test_async_client_round_trip_with_typed_results_and_errors(cluster):
    async with AsyncClient(cluster.urls, cluster.admin_key) as client:
        first = await client.submit({"n": 1}, queue="sdk-a", priority=5, tags={"k": "v"}, idempotency_key="once")
        again = await client.submit({"n": 1}, queue="sdk-a", idempotency_key="once")
        assert first.created and not again.created and again.job_id == first.job_id
        ids = await client.submit_batch([{"payload": i, "queue": "sdk-a"} for i in range(3)])
        assert len(ids) == 3
        job = await client.get(first.job_id)
        assert job.state == "READY" and job.priority == 5 and job.tags == {"k": "v"} and job.payload == {"n": 1}
        leased = await client.lease("sdk-a", max_jobs=10, lease_ms=10_000)
        assert [j.job_id for j in leased][0] == first.job_id and len(leased) == 4  # priority first
        assert await client.ack(leased[0].job_id, leased[0].lease_token, {"ok": True}) == "ACKED"
        with pytest.raises(Conflict) as info:
            await client.ack(leased[0].job_id, leased[0].lease_token, {"ok": True})
        assert info.value.code == "conflict" and info.value.status == 409
        results = await client.ack_many([{"job_id": j.job_id, "lease_token": j.lease_token} for j in leased[1:]])
        assert all(r.ok for r in results)
        finished = await client.wait_for(first.job_id, timeout=5)
        assert finished.state == "ACKED" and finished.result == {"ok": True}
        with pytest.raises(NotFound):
            await client.get("no-such-job")
        assert (await client.stats()).by_state["ACKED"] >= 4
    async with AsyncClient(cluster.urls, "client_nope_wrong") as bad:
        with pytest.raises(Unauthorized):
            await bad.stats()


def test_blocking_client_fails_over_from_a_dead_url(cluster):
    dead_url = "http://127.0.0.1:9"  # nothing listens there: the client moves on to the next node
    with Client([dead_url, *cluster.urls], cluster.admin_key, retry_base_s=0.01) as client:
        submitted = client.submit("blocking", queue="sdk-b")
        assert client.get(submitted.job_id).payload == "blocking"
        assert client.node_url != dead_url
        page = client.list(queue="sdk-b")
        assert [j.job_id for j in page.jobs] == [submitted.job_id]


async def _run_until_finished(worker: Worker, client: AsyncClient, ids: list[str]) -> tuple[dict, dict]:
    """Run `worker` until every job of `ids` is finished (30 s at most), stop it: the jobs and its counts."""
    runner = asyncio.ensure_future(worker.run_async())
    deadline = time.monotonic() + 30
    while True:
        jobs = {i: await client.get(i) for i in ids}
        if all(j.finished for j in jobs.values()):
            break
        assert time.monotonic() < deadline, {i: j.state for i, j in jobs.items()}
        await asyncio.sleep(0.2)
    worker.stop()
    return jobs, await asyncio.wait_for(runner, 30)


async def test_worker_acks_nacks_checkpoints_and_abandons_hung_handlers(cluster):
    async with AsyncClient(cluster.urls, cluster.admin_key) as client:
        ok = await client.submit({"kind": "ok"}, queue="work")
        fail = await client.submit({"kind": "fail"}, queue="work", max_retries=0)
        resumed = await client.submit({"kind": "checkpoint"}, queue="work", max_retries=2,
                                      backoff={"base_ms": 10, "max_ms": 20})
        hung = await client.submit({"kind": "hang"}, queue="work", max_retries=0)
        slow = await client.submit({"kind": "slow"}, queue="work")
        seen_checkpoints = []

        async def handler(ctx):
            kind = ctx.payload["kind"]
            if kind == "fail":
                raise ValueError("bad input")
            if kind == "checkpoint":
                seen_checkpoints.append(ctx.checkpoint)
                if ctx.checkpoint is None:
                    ctx.progress(50, checkpoint={"step": 1})
                    await asyncio.sleep(0.3)
                    raise RuntimeError("crash after step 1")
                return {"resumed_from": ctx.checkpoint["step"]}
            if kind == "hang":
                await asyncio.sleep(60)
            if kind == "slow":  # runs longer than its 1 s lease: heartbeats keep it
                await asyncio.sleep(2.5)
            return kind

        worker = Worker(handler, "work", client=client, concurrency=3, lease_ms=1000, job_timeout_s=4,
                        poll_wait_ms=500)
        ids = [ok.job_id, fail.job_id, resumed.job_id, hung.job_id, slow.job_id]
        jobs, counts = await _run_until_finished(worker, client, ids)
        assert jobs[ok.job_id].state == "ACKED" and jobs[ok.job_id].result == "ok"
        assert jobs[fail.job_id].state == "DEAD" and "ValueError: bad input" in jobs[fail.job_id].last_error
        assert jobs[resumed.job_id].state == "ACKED" and jobs[resumed.job_id].result == {"resumed_from": 1}
        assert seen_checkpoints == [None, {"step": 1}]
        assert jobs[hung.job_id].state == "DEAD" and "timed out" in jobs[hung.job_id].last_error
        assert jobs[slow.job_id].state == "ACKED" and jobs[slow.job_id].attempts == 1  # never lost its lease
        assert counts["acked"] == 3 and counts["timed_out"] == 1


async def test_the_worker_finishes_jobs_when_the_server_refuses_what_it_sends(cluster):
    """A checkpoint, an error text or a result the server refuses (400/413) as written will never be taken.
    Waiting for the lease to expire would run the job again, alongside the first run, until it is DEAD. Instead
    the worker drops the checkpoint and keeps the lease, shortens the error, and acks with `result_error`."""
    over = (1 << 20) + 16  # past the cluster's default --max-payload
    async with AsyncClient(cluster.urls, cluster.admin_key) as client:
        checkpoint = await client.submit({"kind": "big_checkpoint"}, queue="refused", max_retries=1)
        error = await client.submit({"kind": "long_error"}, queue="refused", max_retries=0)
        result = await client.submit({"kind": "big_result"}, queue="refused", max_retries=1)
        odd = await client.submit({"kind": "unencodable"}, queue="refused", max_retries=1)
        runs: list[str] = []

        async def handler(ctx):
            kind = ctx.payload["kind"]
            runs.append(kind)
            if kind == "big_checkpoint":
                ctx.progress(10, checkpoint="x" * over)
                await asyncio.sleep(2.5)  # past its 1 s lease: the heartbeats must go on without the checkpoint
                return "done"
            if kind == "long_error":
                raise RuntimeError("e" * 9000)
            if kind == "unencodable":
                ctx.progress(20, checkpoint={"seen": {1, 2}})  # a set: not JSON
                await asyncio.sleep(1.5)
                return {1, 2}
            return "r" * over

        worker = Worker(handler, "refused", client=client, concurrency=3, lease_ms=1000, poll_wait_ms=500)
        jobs, counts = await _run_until_finished(worker, client, [checkpoint.job_id, error.job_id, result.job_id,
                                                                 odd.job_id])
        done = jobs[checkpoint.job_id]
        assert done.state == "ACKED" and done.result == "done" and done.attempts == 1 and done.checkpoint is None
        failed = jobs[error.job_id]
        assert failed.state == "DEAD" and failed.attempts == 1 and failed.last_error.startswith("RuntimeError: eee")
        refused = jobs[result.job_id]
        assert refused.state == "ACKED" and refused.attempts == 1 and "refused" in refused.result_error
        unencodable = jobs[odd.job_id]
        assert unencodable.state == "ACKED" and unencodable.attempts == 1 and "JSON" in unencodable.result_error
        assert sorted(runs) == ["big_checkpoint", "big_result", "long_error", "unencodable"]  # each ran once
        assert counts["acked"] == 3 and counts["nacked"] == 1 and counts["lost"] == 0


async def test_job_ids_from_outside_cannot_reach_another_route(cluster):
    """The SDK percent-encodes ids in paths: an id like "../queues/q/pause?" names no job, it pauses nothing."""
    async with AsyncClient(cluster.urls, cluster.admin_key) as client:
        for call in (client.cancel, client.get):
            with pytest.raises((NotFound, ValidationError)):
                await call("../queues/traversal/pause?")
        await client.submit({"n": 1}, queue="traversal")
        leased = await client.lease("traversal", wait_ms=2000)
        assert [job.queue for job in leased] == ["traversal"]  # the queue was not paused
        for name in (".", ".."):  # valid queue names, not dot segments
            assert (await client.pause(name))["queue"] == name
            assert (await client.resume(name))["queue"] == name


async def test_a_stopping_worker_gives_unfinished_jobs_back_without_spending_an_attempt(cluster):
    """Past its grace a stopping worker releases the jobs still running: READY at once for the next worker,
    the attempt not counted (with max_retries=0 a nack would have made it DEAD), the checkpoint kept."""
    async with AsyncClient(cluster.urls, cluster.admin_key) as client:
        job = await client.submit({"kind": "long"}, queue="giveback", max_retries=0)
        started = asyncio.Event()

        async def handler(ctx):
            if ctx.checkpoint is None:
                ctx.progress(30, checkpoint={"step": 1})
                started.set()
                await asyncio.sleep(60)
            return {"resumed_from": ctx.checkpoint["step"], "attempt": ctx.attempt}

        first = Worker(handler, "giveback", client=client, concurrency=1, lease_ms=5000, shutdown_grace_s=0.3,
                       poll_wait_ms=500)
        runner = asyncio.ensure_future(first.run_async())
        await asyncio.wait_for(started.wait(), 20)
        first.stop()
        counts = await asyncio.wait_for(runner, 30)
        assert counts["returned"] == 1 and counts["nacked"] == 0
        back = await client.get(job.job_id)
        assert back.state == "READY" and back.attempts == 0 and back.last_error is None
        assert back.checkpoint == {"step": 1} and back.progress == 30
        second = Worker(handler, "giveback", client=client, concurrency=1, poll_wait_ms=500)
        runner = asyncio.ensure_future(second.run_async())
        deadline = time.monotonic() + 20
        while not (done := await client.get(job.job_id)).finished:
            assert time.monotonic() < deadline, done.state
            await asyncio.sleep(0.2)
        second.stop()
        await asyncio.wait_for(runner, 30)
        assert done.state == "ACKED" and done.attempts == 1 and done.result == {"resumed_from": 1, "attempt": 1}


HANDLER = '''
import time
def handle(ctx):
    time.sleep(ctx.payload.get("sleep", 0))
    return {"doubled": ctx.payload["n"] * 2}
'''


def test_cli_commands_and_worker_process_with_graceful_sigterm(cluster, tmp_path):
    (tmp_path / "handlers.py").write_text(textwrap.dedent(HANDLER))
    env = dict(os.environ, RAFTQUEUE_URL=",".join(cluster.urls), RAFTQUEUE_KEY=cluster.admin_key,
               PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")

    def cli(*args: str, check: int | None = 0) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "raftqueue", *args], env=env, capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
        if check is not None:
            assert proc.returncode == check, (args, proc.stdout, proc.stderr)
        return proc

    submitted = orjson.loads(cli("submit", '{"n": 21}', "-q", "cli", "--json").stdout)
    (tmp_path / "bulk.jsonl").write_text("\n".join(orjson.dumps({"n": i}).decode() for i in range(25)))
    bulk = orjson.loads(cli("submit", "--file", str(tmp_path / "bulk.jsonl"), "--payloads", "-q", "cli",
                            "--batch-size", "10", "--json").stdout)
    assert len(bulk["job_ids"]) == 25
    assert orjson.loads(cli("get", submitted["job_id"], "--json").stdout)["state"] == "READY"
    assert "READY" in cli("list", "-q", "cli", "--limit", "5").stdout
    cli("get", "missing-job", check=3)
    assert cli("submit", "{not json", check=None).returncode == 2
    cli("stats", "--key", "client_bad_key", check=6)
    status = orjson.loads(cli("cluster", "status", "--json").stdout)
    assert sorted(s["role"] for s in status) == ["follower", "follower", "leader"]
    assert len({s["state_digest"] for s in status}) >= 1
    cli("pause", "cli")
    cli("lease", "-q", "cli", check=3)  # paused: nothing to lease
    cli("resume", "cli")
    held = orjson.loads(cli("submit", '{"n": 0}', "-q", "cli-release", "--max-retries", "0", "--json").stdout)
    leased = orjson.loads(cli("lease", "-q", "cli-release", "--json").stdout)
    assert [j["job_id"] for j in leased] == [held["job_id"]] and leased[0]["attempt"] == 1
    released = orjson.loads(cli("release", held["job_id"], leased[0]["lease_token"], "--json").stdout)
    assert released == {"job_id": held["job_id"], "state": "READY", "attempts": 0}
    cli("release", held["job_id"], leased[0]["lease_token"], check=4)  # not RUNNING any more: 409
    # a slow job in hand at SIGTERM is finished (grace), then the worker exits 0
    slow = orjson.loads(cli("submit", '{"n": 1, "sleep": 2}', "-q", "cli-slow", "--json").stdout)
    worker = subprocess.Popen([sys.executable, "-m", "raftqueue", "worker", "handlers:handle", "-q", "cli",
                               "-q", "cli-slow", "-c", "4", "--grace", "20"], env=env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 40
        while True:
            stats = orjson.loads(cli("stats", "--json").stdout)
            done = stats["by_queue"].get("cli", {}).get("by_state", {}).get("ACKED", 0)
            if done == 26:
                break
            assert time.monotonic() < deadline and worker.poll() is None, stats
            time.sleep(0.3)
        running = orjson.loads(cli("get", slow["job_id"], "--json").stdout)["state"]
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=40)
        assert worker.returncode == 0, err[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
    assert running in ("RUNNING", "ACKED")
    final = orjson.loads(cli("get", slow["job_id"], "--json").stdout)
    assert final["state"] == "ACKED" and final["result"] == {"doubled": 2}
    assert orjson.loads(cli("get", submitted["job_id"], "--json").stdout)["result"] == {"doubled": 42}
    created = orjson.loads(cli("keys", "create", "svc", "--owner", "ops", "--type", "client", "--json").stdout)
    assert created["key"].startswith("client_")
    listed = orjson.loads(cli("keys", "list", "--all", "--json").stdout)
    assert created["key_id"] in [k["key_id"] for k in listed] and created["key"] not in str(listed)
    cli("keys", "revoke", created["key_id"])
    cli("stats", "--key", created["key"], check=6)


async def test_metrics_count_jobs_and_raft_state_and_pass_promtool(cluster, tmp_path):
    async with Api(cluster) as api:
        for i in range(5):
            await api.post(i % 3, "/jobs", {"payload": i, "queue": "met"})
        leader = await api.leader()
        status, text, headers = await api.get(leader, "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        api.key = None
        assert (await api.get(leader, "/metrics"))[0] == 401  # behind a key unless --metrics-open
    from prometheus_client.parser import text_string_to_metric_families
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("raftqueue_jobs", (("queue", "met"), ("state", "READY")))] == 5
    assert samples[("raftqueue_jobs_submitted_total", (("queue", "met"),))] == 5
    assert samples[("raftqueue_raft_role", (("role", "leader"),))] == 1
    assert samples[("raftqueue_raft_proposal_duration_seconds_count", ())] >= 1
    assert samples[("raftqueue_raft_group_commit_entries_total", ())] >= 1
    assert ("raftqueue_forward_errors_total", (("reason", "not_sent"),)) in samples
    assert any(name == "raftqueue_http_request_duration_seconds_count" and dict(labels).get("route") == "/jobs"
               for name, labels in samples)
    promtool = "/usr/bin/promtool"
    if not os.path.exists(promtool):
        pytest.skip("promtool is not installed (Debian package prometheus); the parse above still ran")
    (tmp_path / "m.txt").write_text(text)
    proc = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


async def test_sdk_submits_through_a_leader_kill_make_exactly_one_job_each(tmp_path):
    """Submits without a caller's idempotency key, while the leader is killed: the client retries with the
    key it made, so every call returns a job and no call makes two."""
    cluster = make_cluster(tmp_path / "c")
    cluster.start_all()
    try:
        await cluster.wait_ready(timeout=60)
        async with Api(cluster) as api, AsyncClient(cluster.urls, cluster.admin_key, timeout=5,
                                                     max_attempts=40, retry_max_s=0.5) as client:
            leader = await api.leader()
            results: list[str] = []

            async def producer(n: int) -> None:
                for i in range(40):
                    results.append((await client.submit({"producer": n, "i": i}, queue="kill")).job_id)

            tasks = [asyncio.ensure_future(producer(n)) for n in range(8)]
            await asyncio.sleep(0.5)
            cluster.nodes[leader].kill()
            await asyncio.wait_for(asyncio.gather(*tasks), 120)
            assert len(results) == 320 and len(set(results)) == 320
            survivor = (leader + 1) % 3
            seen = set()
            cursor = None
            while True:
                status, page, _ = await api.get(survivor, "/jobs", params={"queue": "kill", "limit": "500",
                                                                           "consistency": "leader",
                                                                           **({"cursor": cursor} if cursor else {})})
                assert status == 200
                seen |= {(j["payload"]["producer"], j["payload"]["i"]) for j in page["jobs"]}
                cursor = page["next_cursor"]
                if not cursor:
                    break
            status, stats, _ = await api.get(survivor, "/stats", params={"consistency": "leader"})
            assert stats["by_queue"]["kill"]["total"] == 320 and len(seen) == 320, stats["by_queue"]
    finally:
        cluster.stop_all()
