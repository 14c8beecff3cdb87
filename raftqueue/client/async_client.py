"""`AsyncClient`: the asyncio SDK. Any node takes any request; the client fails over between the nodes it
was given.

Retries are bounded and jittered, and only where they are safe:
- a request that never reached a node (connection refused, DNS, reset before sending), a 503 (election) or a
  429 (back-pressure) was certainly not applied: it is retried on the next node after a backoff;
- a write whose outcome is unknown (504 `commit_timeout`, a timeout or a connection lost after sending) is
  retried only when a retry cannot apply it twice: reads, leases (a lost lease just expires), and submits,
  which always carry an idempotency key (the client makes one when the caller did not).
"""
from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from raftqueue.client.errors import (CommitTimeout, NoJobs, Overloaded, RaftqueueError, Unavailable, ValidationError,
                                     error_for)
from raftqueue.client.models import AckResult, ApiKey, Job, JobPage, LeasedJob, Stats, Submitted

_UNSET: Any = object()
_RETRY_NOW = (Unavailable, Overloaded)  # certainly not applied
MAX_TEXT = 8192  # the server's limit on an error text (nack `error`, ack `result_error`), in characters


def _segment(value: Any) -> str:
    """One path segment, percent-encoded: an id such as "../queues/q/pause?" must not reach another route, and a
    queue named "." or ".." (valid names) must not be taken for a dot segment."""
    text = str(value)
    if text.strip(".") == "":
        return "%2E" * len(text)
    return quote(text, safe="")


def _urls_from(urls: str | Sequence[str] | None) -> list[str]:
    if urls is None:
        urls = os.environ.get("RAFTQUEUE_URL", "http://127.0.0.1:8081")
    if isinstance(urls, str):
        urls = [u for u in urls.replace(" ", ",").split(",") if u]
    cleaned = [u.rstrip("/") for u in urls]
    if not cleaned:
        raise ValueError("give at least one node URL (or set RAFTQUEUE_URL)")
    return cleaned


def _time(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("run_at must be timezone-aware")
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _with(body: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """`body` plus every field that was given (not None, not unset)."""
    body.update({name: value for name, value in fields.items() if value is not None and value is not _UNSET})
    return body


def job_spec(payload: Any, *, queue: str | None = None, priority: int | None = None,
             run_at: datetime | str | None = None, delay_ms: int | None = None, max_retries: int | None = None,
             lease_ms: int | None = None, backoff: Mapping[str, int] | None = None,
             idempotency_key: str | None = None, tags: Mapping[str, str] | None = None,
             depends_on: Iterable[str] | None = None) -> dict:
    """The JSON body of one job (POST /jobs, or one item of POST /jobs/batch); unset options are left out."""
    return _with({"payload": payload}, queue=queue, priority=priority, run_at=_time(run_at), delay_ms=delay_ms,
                 max_retries=max_retries, lease_ms=lease_ms, idempotency_key=idempotency_key,
                 backoff=dict(backoff) if backoff is not None else None,
                 tags=dict(tags) if tags is not None else None,
                 depends_on=list(depends_on) if depends_on is not None else None)


class AsyncClient:
    """Talks to a raftqueue cluster. `urls`: one or more node URLs (or RAFTQUEUE_URL, comma-separated);
    `key`: an API key (or RAFTQUEUE_KEY). Use as `async with AsyncClient(...) as client:` or call close()."""

    def __init__(self, urls: str | Sequence[str] | None = None, key: str | None = _UNSET, *,
                 timeout: float = 30.0, max_attempts: int = 8, retry_base_s: float = 0.05,
                 retry_max_s: float = 2.0, auto_idempotency: bool = True, ssl: Any = None) -> None:
        self.urls = _urls_from(urls)
        self.key = os.environ.get("RAFTQUEUE_KEY") if key is _UNSET else key
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.auto_idempotency = auto_idempotency
        self._ssl = ssl
        self._node = 0  # the node that answered last: keep using it while it works
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()

    # ----- life cycle ------------------------------------------------------------------------------------------
    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"User-Agent": "raftqueue-python"}
            if self.key:
                headers["Authorization"] = f"Bearer {self.key}"
            self._session = aiohttp.ClientSession(headers=headers,
                                                  connector=aiohttp.TCPConnector(limit=0, ssl=self._ssl))
        return self._session

    @property
    def node_url(self) -> str:
        """The node this client is using now."""
        return self.urls[self._node]

    # ----- the one request path --------------------------------------------------------------------------------
    async def request(self, method: str, path: str, body: Any = None, *, params: Mapping[str, Any] | None = None,
                      retry_unknown: bool = True, timeout: float | None = None) -> tuple[int, Any, Mapping]:
        """One API call with fail-over. Returns (status, parsed body, headers) for 2xx; raises RaftqueueError."""
        try:
            data = orjson.dumps(body) if body is not None else None
        except TypeError as exc:  # a set, an object, an int over 64 bits: refused as written, as a 400 would be
            raise ValidationError(f"the request cannot be sent as JSON: {exc}", code="validation_error") from None
        headers = {"Content-Type": "application/json"} if data is not None else None
        query = {k: str(v) for k, v in (params or {}).items() if v is not None}
        last: RaftqueueError | None = None
        for attempt in range(self.max_attempts):
            url = URL(self.urls[self._node] + path, encoded=True)  # as built: yarl would undo "%2E" segments
            try:
                async with self._get_session().request(
                        method, url, data=data, headers=headers, params=query,
                        timeout=aiohttp.ClientTimeout(total=timeout or self.timeout)) as resp:
                    raw = await resp.read()
                    parsed = _parse(raw, resp.content_type)
                    if resp.status < 400:
                        return resp.status, parsed, resp.headers
                    error = error_for(resp.status, parsed)
                    retry_after = resp.headers.get("Retry-After")
            except aiohttp.ClientConnectorError as exc:  # never reached the node: certainly not applied
                error, retry_after = Unavailable(f"{url}: {exc}", code="unreachable"), None
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:  # sent, but no answer: outcome unknown
                error = CommitTimeout(f"{url}: no answer ({exc.__class__.__name__})", code="no_answer")
                retry_after = None
            if isinstance(error, _RETRY_NOW) or (isinstance(error, CommitTimeout) and retry_unknown):
                last = error
                if isinstance(error, Unavailable) or isinstance(error, CommitTimeout):
                    self._node = (self._node + 1) % len(self.urls)  # try another node
                if attempt + 1 < self.max_attempts:
                    await asyncio.sleep(self._backoff(attempt, retry_after))
                continue
            raise error
        assert last is not None
        raise last

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        cap = min(self.retry_max_s, self.retry_base_s * (2 ** attempt))
        delay = self._rng.uniform(cap / 2, cap)  # jittered: clients that failed together do not return together
        if retry_after:
            try:
                delay = min(max(delay, float(retry_after) * self._rng.uniform(0.2, 0.6)), self.retry_max_s)
            except ValueError:
                pass
        return delay

    # ----- submitting ------------------------------------------------------------------------------------------
    async def submit(self, payload: Any, *, queue: str | None = None, priority: int | None = None,
                     run_at: datetime | str | None = None, delay_ms: int | None = None,
                     max_retries: int | None = None, lease_ms: int | None = None,
                     backoff: Mapping[str, int] | None = None, idempotency_key: str | None = None,
                     tags: Mapping[str, str] | None = None, depends_on: Iterable[str] | None = None) -> Submitted:
        """Submit one job. Without an idempotency_key the client makes one, so a retried submit never makes two."""
        if idempotency_key is None and self.auto_idempotency:
            idempotency_key = f"sdk-{uuid.uuid4().hex}"
        spec = job_spec(payload, queue=queue, priority=priority, run_at=run_at, delay_ms=delay_ms,
                        max_retries=max_retries, lease_ms=lease_ms, backoff=backoff,
                        idempotency_key=idempotency_key, tags=tags, depends_on=depends_on)
        status, body, _ = await self.request("POST", "/jobs", spec, retry_unknown=idempotency_key is not None)
        return Submitted.from_json(body, created=status == 201)

    async def submit_batch(self, jobs: Sequence[Mapping[str, Any]]) -> list[str]:
        """Submit up to 1,000 jobs in one Raft entry, all or nothing. Each item is a job body (see `job_spec`);
        items without an idempotency_key get one, so the whole batch can be retried safely."""
        items = []
        for job in jobs:
            item = dict(job)
            if "payload" not in item:
                raise ValueError("every job needs a payload")
            if self.auto_idempotency and item.get("idempotency_key") is None:
                item["idempotency_key"] = f"sdk-{uuid.uuid4().hex}"
            items.append(item)
        retry = all(item.get("idempotency_key") is not None for item in items)
        _, body, _ = await self.request("POST", "/jobs/batch", {"jobs": items}, retry_unknown=retry)
        return list(body["job_ids"])

    # ----- reading ---------------------------------------------------------------------------------------------
    async def get(self, job_id: str, *, consistency: str | None = None, min_index: int | None = None) -> Job:
        _, body, _ = await self.request("GET", f"/jobs/{_segment(job_id)}",
                                        params={"consistency": consistency, "min_index": min_index})
        return Job.from_json(body)

    async def list(self, *, state: str | None = None, queue: str | None = None, limit: int | None = None,
                   cursor: str | None = None) -> JobPage:
        """One page of jobs, newest first; pass `next_cursor` back for the next page."""
        _, body, _ = await self.request("GET", "/jobs", params={"state": state, "queue": queue, "limit": limit,
                                                               "cursor": cursor})
        return JobPage([Job.from_json(j) for j in body["jobs"]], body.get("next_cursor"))

    async def iter_jobs(self, *, state: str | None = None, queue: str | None = None, page_size: int = 500):
        """Every job matching the filters, page by page."""
        cursor = None
        while True:
            page = await self.list(state=state, queue=queue, limit=page_size, cursor=cursor)
            for job in page.jobs:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def stats(self) -> Stats:
        _, body, _ = await self.request("GET", "/stats")
        return Stats.from_json(body)

    async def cluster(self) -> dict:
        """`GET /cluster`: the view of the node in use."""
        return (await self.request("GET", "/cluster"))[1]

    async def cluster_nodes(self) -> list[dict]:
        """`GET /cluster/nodes`: every member's status (a member that did not answer has an `error`)."""
        return (await self.request("GET", "/cluster/nodes"))[1]["nodes"]

    async def add_member(self, member_id: str, raft_addr: str, http_addr: str) -> dict:
        """`POST /cluster/members` (admin): add a started node; `{member, members}` once the node has caught up with
        the log and was added, or after the node's `--catch-up-wait` (20 s) `{member, members, catching_up}` while
        it goes on catching up (the leader adds it once it has). Repeating it is harmless."""
        return (await self.request("POST", "/cluster/members",
                                   {"id": member_id, "raft_addr": raft_addr, "http_addr": http_addr}))[1]

    async def remove_member(self, member_id: str) -> dict:
        """`DELETE /cluster/members/{id}` (admin): `{removed, members}`; the leader hands over first."""
        return (await self.request("DELETE", f"/cluster/members/{_segment(member_id)}", retry_unknown=False))[1]

    async def wait_for(self, job_id: str, *, timeout: float = 60.0, poll_s: float = 0.2) -> Job:
        """Wait until the job is ACKED, DEAD or CANCELLED and return it; TimeoutError after `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = poll_s
        while True:
            job = await self.get(job_id, consistency="stale")
            if job.finished:
                return job
            if loop.time() >= deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 1.5, 2.0)

    # ----- working ---------------------------------------------------------------------------------------------
    async def lease(self, queues: str | Sequence[str] = "default", *, max_jobs: int = 1, lease_ms: int | None = None,
                    wait_ms: int | None = None, worker_id: str | None = None) -> list[LeasedJob]:
        """Lease up to `max_jobs` jobs (long-poll up to `wait_ms`); an empty list when nothing was runnable."""
        body = _with({"max_jobs": max_jobs, "queues": [queues] if isinstance(queues, str) else list(queues)},
                     lease_ms=lease_ms, wait_ms=wait_ms, worker_id=worker_id)
        timeout = self.timeout + (wait_ms or 0) / 1000
        try:
            _, answer, _ = await self.request("POST", "/jobs/lease", body, timeout=timeout)
        except NoJobs:
            return []
        return [LeasedJob.from_json(j) for j in answer.get("jobs", [])]

    async def ack(self, job_id: str, lease_token: str | None, result: Any = _UNSET, *,
                  result_error: str | None = None) -> str:
        """Finish a job with its result (or a recorded `result_error`). Returns the new state (ACKED)."""
        body = _with({}, lease_token=lease_token, result_error=result_error)
        if result is not _UNSET:  # None is a result too
            body["result"] = result
        _, answer, _ = await self.request("POST", f"/jobs/{_segment(job_id)}/ack", body, retry_unknown=False)
        return answer["state"]

    async def ack_many(self, acks: Sequence[Mapping[str, Any]]) -> list[AckResult]:
        """Up to 1,000 acks (`{job_id, lease_token, result | result_error}`) in one Raft entry."""
        _, answer, _ = await self.request("POST", "/jobs/ack", {"acks": [dict(a) for a in acks]},
                                          retry_unknown=False)
        return [AckResult(r["job_id"], r.get("state"), r.get("error")) for r in answer["results"]]

    async def nack(self, job_id: str, lease_token: str, error: str = "", *,
                   retry_in_ms: int | None = None) -> dict:
        """Give a job back as failed: RETRY after its backoff (or `retry_in_ms`), or DEAD when out of attempts."""
        body = _with({"lease_token": lease_token, "error": error[:MAX_TEXT]}, retry_in_ms=retry_in_ms)
        _, answer, _ = await self.request("POST", f"/jobs/{_segment(job_id)}/nack", body, retry_unknown=False)
        return answer

    async def release(self, job_id: str, lease_token: str) -> dict:
        """Give a job back unfinished (say, the worker is shutting down): READY at once for another worker, and
        the attempt is not counted. For a job that failed, use `nack`."""
        _, answer, _ = await self.request("POST", f"/jobs/{_segment(job_id)}/release", {"lease_token": lease_token},
                                          retry_unknown=False)
        return answer

    async def extend(self, job_id: str, lease_token: str, lease_ms: int | None = None, *,
                     progress: int | None = None, checkpoint: Any = _UNSET) -> dict:
        """Extend a lease (heartbeat), optionally recording progress (0..100) and a checkpoint."""
        body = _with({"lease_token": lease_token}, lease_ms=lease_ms, progress=progress)
        if checkpoint is not _UNSET:  # None clears the checkpoint
            body["checkpoint"] = checkpoint
        _, answer, _ = await self.request("POST", f"/jobs/{_segment(job_id)}/extend", body, retry_unknown=True)
        return answer

    # ----- managing --------------------------------------------------------------------------------------------
    async def cancel(self, job_id: str, reason: str | None = None) -> dict:
        return (await self.request("POST", f"/jobs/{_segment(job_id)}/cancel", {"reason": reason} if reason else {},
                                   retry_unknown=True))[1]

    async def retry(self, job_id: str, *, reset_attempts: bool = False) -> dict:
        """Redrive one DEAD or CANCELLED job."""
        return (await self.request("POST", f"/jobs/{_segment(job_id)}/retry", {"reset_attempts": reset_attempts},
                                   retry_unknown=False))[1]

    async def retry_dead(self, queue: str | None = None) -> int:
        """Redrive every DEAD job of a queue; returns how many."""
        body = {"queue": queue} if queue else {}
        return int((await self.request("POST", "/jobs/dead/retry", body, retry_unknown=True))[1]["count"])

    async def pause(self, queue: str) -> dict:
        return (await self.request("POST", f"/queues/{_segment(queue)}/pause", {}, retry_unknown=True))[1]

    async def resume(self, queue: str) -> dict:
        return (await self.request("POST", f"/queues/{_segment(queue)}/resume", {}, retry_unknown=True))[1]

    async def create_key(self, name: str, owner_id: str, type: str = "client") -> ApiKey:  # noqa: A002
        """An admin makes a key; the answer's `key` is the secret, shown only now."""
        _, body, _ = await self.request("POST", "/admin/keys", {"name": name, "owner_id": owner_id, "type": type},
                                        retry_unknown=False)
        return ApiKey.from_json(body)

    async def list_keys(self, *, all_keys: bool = False) -> list[ApiKey]:
        """Your own keys, or every key (`all_keys`, admin)."""
        _, body, _ = await self.request("GET", "/admin/keys" if all_keys else "/keys")
        return [ApiKey.from_json(k) for k in body]

    async def revoke_key(self, key_id: str) -> dict:
        return (await self.request("DELETE", f"/keys/{_segment(key_id)}", retry_unknown=True))[1]


def _parse(raw: bytes, content_type: str) -> Any:
    if not raw:
        return None
    if content_type == "application/json" or raw[:1] in (b"{", b"["):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return raw.decode("utf-8", errors="replace")
