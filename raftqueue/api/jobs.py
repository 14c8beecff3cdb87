"""Job routes of API.md: submit (single, batch), lease (long-poll), ack (single, batch), nack, extend, cancel,
retry, dead-letter redrive, get, list, queue pause/resume."""
from __future__ import annotations

import asyncio
import logging
import time

import orjson
from aiohttp import web

from raftqueue.api import validation as v
from raftqueue.api.context import Context
from raftqueue.api.errors import ApiError, invalid
from raftqueue.api.batch_forward import LeaderRetry
from raftqueue.api.forward import ForwardBroken, ForwardNotSent
from raftqueue.api.appkeys import CTX
from raftqueue.api.views import job_view, leased_view, submit_view
from raftqueue.timefmt import to_rfc3339

routes = web.RouteTableDef()
log = logging.getLogger("raftqueue.api.jobs")


def json_response(data, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _ctx(request: web.Request) -> Context:
    return request.app[CTX]


def _one(ctx: Context, results: list) -> dict:
    return ctx.store_result(results[0])


# ----- submit ----------------------------------------------------------------------------------------------------
@routes.post("/jobs")
async def submit(request: web.Request) -> web.Response:
    ctx = _ctx(request)

    def plan(body: bytes):
        command = v.submit_command(v.parse_json(body), ctx.limits, ctx.defaults)

        def render(index: int, results: list) -> web.Response:
            result = _one(ctx, results)
            return json_response(submit_view(result), 200 if result.get("duplicate") else 201)
        return [command], render
    return await ctx.write(request, plan, pure_plan=True)


@routes.post("/jobs/batch")
async def submit_batch(request: web.Request) -> web.Response:
    ctx = _ctx(request)

    def plan(body: bytes):
        command = v.batch_command(v.parse_json(body), ctx.limits, ctx.defaults)

        def render(index: int, results: list) -> web.Response:
            result = _one(ctx, results)
            return json_response({"job_ids": result["job_ids"]}, 201)
        return [command], render
    return await ctx.write(request, plan, pure_plan=True)


# ----- lease (with long-poll) -----------------------------------------------------------------------------------
def _lease_answer(jobs: list, list_form: bool, index: int | None, ctx: Context) -> web.Response:
    if list_form:
        response = json_response({"jobs": [leased_view(j) for j in jobs]})
    elif jobs:
        response = json_response(leased_view(jobs[0]))
    else:
        response = json_response({"error": {"code": "no_jobs", "message": "no job is ready to lease"}}, 404)
    if index is not None:
        response.headers.update(ctx.raft_headers(index))
    return response


def _client_gone(request: web.Request) -> bool:
    """The client hung up while its poll was parked (its timeout shorter than its wait_ms, a worker killed or
    stopped). aiohttp goes on running the handler, and a lease granted now would reach nobody: the job would sit
    RUNNING until the lease expired, and the attempt would count (with max_retries 0 it would go DEAD unrun).
    A forwarded request's client is the follower's to watch."""
    if request.get("forwarded"):
        return False
    transport = request.transport
    return transport is None or transport.is_closing()


def _leader_stopped_answering(exc: ForwardBroken) -> ApiError:
    return ApiError(504, "commit_timeout", f"the leader stopped answering ({exc}); a lease may have been granted "
                                           "and will expire")


@routes.post("/jobs/lease")
async def lease(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    body = await ctx.body(request)
    command, wait_ms, list_form = v.lease_command(v.parse_json(body, required=False), ctx.limits, ctx.defaults)
    waiters = ctx.extras["lease_waiters"]
    gate = ctx.extras["lease_gate"]
    queues = command["queues"]
    deadline = time.monotonic() + wait_ms / 1000
    leader_deadline = time.monotonic() + max(ctx.settings.leader_wait_s, wait_ms / 1000)
    forwarded = request.get("forwarded", False)
    asked_empty = False
    while True:
        replica = ctx.replica
        if _client_gone(request):
            waiters.pass_on(queues)  # a wake-up that found nobody here is another waiter's
            return _lease_answer([], list_form, None, ctx)
        if replica.is_leader:
            claim = await gate.claim(command)  # None: nothing is left to lease, and an empty poll writes nothing
            if claim is not None:
                with claim:
                    outcome = await ctx.propose_here([dict(command)],
                                                     "the lease may have been granted and will expire")
                if outcome is not None:
                    index, results = outcome
                    jobs = _one(ctx, results)["jobs"]
                    if jobs and _client_gone(request):  # it hung up while the lease was being committed
                        await _give_back(ctx, request, jobs, None)
                        return _lease_answer([], list_form, None, ctx)
                    if jobs or time.monotonic() >= deadline:
                        return _lease_answer(jobs, list_form, index, ctx)
                    continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return _lease_answer([], list_form, None, ctx)
            await waiters.wait(queues, remaining)
            continue
        if forwarded:  # we lost leadership while the follower's client waited: release it, it polls again
            return _lease_answer([], list_form, None, ctx)
        leader = replica.leader
        if leader is not None and leader.id != ctx.settings.node_id:
            # A poll without wait_ms is the leader's to answer at once (it writes nothing when nothing is
            # runnable). A long poll parks on this follower's replica (which applies the same entries, so the
            # same READY events wake it) and sends the leader only a lease command, batched with other
            # forwarded writes, once its copy shows a runnable job: a waiting poll costs the leader nothing,
            # and a lease costs it a proposal, not a request held open. After an empty answer (another worker
            # was faster, or this node's clock is ahead of the leader's) it waits for the next wake first.
            if wait_ms == 0:
                try:
                    return await ctx.batcher.forward(request, body, leader)
                except ForwardNotSent:
                    pass  # the leader is gone: wait (bounded, below) for the next one
                except ForwardBroken as exc:
                    raise _leader_stopped_answering(exc) from None
            elif not asked_empty and waiters.runnable(queues):
                try:
                    index, results, leader_id = await ctx.batcher.propose(request, [dict(command)], leader)
                except (ForwardNotSent, LeaderRetry):
                    pass  # the leader is gone, or no longer leads: wait (bounded, below) for the next one
                except ForwardBroken as exc:
                    raise _leader_stopped_answering(exc) from None
                else:
                    jobs = _one(ctx, results)["jobs"]
                    if jobs and _client_gone(request):  # it hung up while the lease was being committed
                        await _give_back(ctx, request, jobs, leader)
                        return _lease_answer([], list_form, None, ctx)
                    if jobs or time.monotonic() >= deadline:
                        answer = _lease_answer(jobs, list_form, None, ctx)
                        answer.headers.update(ctx.raft_headers(index, leader_id))
                        return answer
                    asked_empty = True
                    await replica.wait_applied(index, max(0.0, min(1.0, deadline - time.monotonic())))
                    continue
            else:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _lease_answer([], list_form, None, ctx)
                await waiters.wait(queues, remaining)
                asked_empty = False
                continue
        if time.monotonic() >= leader_deadline:
            raise ApiError(503, "no_leader", "no leader is available (an election is in progress); retry",
                           {"Retry-After": "1"})
        await asyncio.sleep(0.02)


async def _give_back(ctx: Context, request: web.Request, jobs: list, leader) -> None:
    """Release leases nobody will receive: here when this node leads (`leader` None), else through the leader
    that granted them. If that fails, they expire as any lost lease does."""
    releases = [{"kind": "release", "job_id": job["job_id"], "lease_token": job["lease_token"]} for job in jobs]
    try:
        if leader is None:
            await ctx.propose_here(releases)
        else:
            await ctx.batcher.propose(request, releases, leader)
    except (ForwardNotSent, LeaderRetry, ForwardBroken, ApiError) as exc:
        log.info("could not give back %d job(s) leased to a client that hung up: %s", len(jobs), exc)


# ----- completion ----------------------------------------------------------------------------------------------
@routes.post("/jobs/ack")
async def ack_batch(request: web.Request) -> web.Response:
    ctx = _ctx(request)

    def plan(body: bytes):
        command = v.ack_batch_command(v.parse_json(body), ctx.limits)

        def render(index: int, results: list) -> web.Response:
            result = _one(ctx, results)
            return json_response({"results": result["results"]})
        return [command], render
    return await ctx.write(request, plan, pure_plan=True)


def _single_job_write(build):
    """A POST /jobs/{id}/<verb> route: build(ctx, job_id, parsed_body) -> command; answer the store result."""
    async def handler(request: web.Request) -> web.Response:
        ctx = _ctx(request)
        job = request.match_info["job_id"]

        def plan(body: bytes):
            command = build(ctx, job, v.parse_json(body, required=False))

            def render(index: int, results: list) -> web.Response:
                result = _one(ctx, results)
                return json_response(_times(result))
            return [command], render
        return await ctx.write(request, plan, pure_plan=True)
    return handler


def _times(result: dict) -> dict:
    out = dict(result)
    for key in ("run_at", "lease_until"):
        if key in out:
            out[key] = to_rfc3339(out[key])
    return out


@routes.post("/jobs/dead/retry")
async def retry_dead(request: web.Request) -> web.Response:
    ctx = _ctx(request)

    def plan(body: bytes):
        command = v.retry_dead_command(v.parse_json(body, required=False))

        def render(index: int, results: list) -> web.Response:
            return json_response({"count": _one(ctx, results)["count"]})
        return [command], render
    return await ctx.write(request, plan, pure_plan=True)


routes.post("/jobs/{job_id}/ack")(_single_job_write(lambda ctx, job, body: v.ack_command(job, body, ctx.limits)))
routes.post("/jobs/{job_id}/nack")(_single_job_write(lambda ctx, job, body: v.nack_command(job, body, ctx.limits)))
routes.post("/jobs/{job_id}/release")(_single_job_write(lambda ctx, job, body: v.release_command(job, body)))
routes.post("/jobs/{job_id}/extend")(_single_job_write(
    lambda ctx, job, body: v.extend_command(job, body, ctx.limits, ctx.defaults)))
routes.post("/jobs/{job_id}/cancel")(_single_job_write(lambda ctx, job, body: v.cancel_command(job, body, ctx.limits)))
routes.post("/jobs/{job_id}/retry")(_single_job_write(lambda ctx, job, body: v.retry_command(job, body)))


# ----- queues ----------------------------------------------------------------------------------------------------
def _queue_write(kind: str):
    async def handler(request: web.Request) -> web.Response:
        ctx = _ctx(request)
        name = v.queue_name(request.match_info["name"], "name")

        def plan(body: bytes):
            def render(index: int, results: list) -> web.Response:
                result = _one(ctx, results)
                if kind == "resume_queue":
                    ctx.extras["lease_waiters"].wake_queue(name)
                return json_response(result)
            return [{"kind": kind, "queue": name}], render
        return await ctx.write(request, plan)
    return handler


routes.post("/queues/{name}/pause")(_queue_write("pause_queue"))
routes.post("/queues/{name}/resume")(_queue_write("resume_queue"))


# ----- reads -----------------------------------------------------------------------------------------------------
@routes.get("/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    job = v.job_id(request.match_info["job_id"])

    def local() -> web.Response:
        with ctx.replica.reading() as store:
            found = store.get(job)
        if found is None:
            raise ApiError(404, "not_found", f"no job {job} (it may have been purged after its retention)")
        return json_response(job_view(found))
    return await ctx.read(request, local, default="leader")


STATES = ("SCHEDULED", "READY", "RUNNING", "RETRY", "ACKED", "DEAD", "CANCELLED")


@routes.get("/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    query = request.query
    state = query.get("state")
    if state is not None:
        state = state.upper()
        if state not in STATES:
            raise invalid("state", f"must be one of {', '.join(STATES)}")
    queue = query.get("queue")
    if queue is not None:
        queue = v.queue_name(queue)
    limit = v.query_int(query.get("limit", "50"), "limit", 1, 500)
    cursor = query.get("cursor")
    if cursor is not None and not v.CURSOR_RE.fullmatch(cursor):
        raise invalid("cursor", "is not a cursor this API returned")

    def local() -> web.Response:
        with ctx.replica.reading() as store:
            try:
                jobs, next_cursor = store.list_jobs(state=state, queue=queue, limit=limit, cursor=cursor)
            except (ValueError, KeyError, TypeError):
                raise invalid("cursor", "is not a cursor this API returned") from None
        return json_response({"jobs": [job_view(j) for j in jobs], "next_cursor": next_cursor})
    return await ctx.read(request, local, default="stale")

