"""Chaos clients: producers and workers spread over all nodes, recording every call in the History.

Producers submit single jobs and batches of 5. Every job's payload carries a unique token (so the checker
can find a job whose submit had an unknown outcome); half carry an idempotency key and are retried on any
error as a careful client would; the others are retried only after a definite "not applied" answer (503,
429). Workers long-poll for jobs and then mostly ack, sometimes nack, extend then ack, or walk away and let
the lease expire. During the drain phase they only ack.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import orjson

from raftqueue.chaos.history import FAIL, OK, UNKNOWN, History

RETRYABLE = (429, 503)          # definitely not applied
UNKNOWN_STATUS = (504,)          # may have been applied
QUEUES = ("q0", "q1")


class Clients:
    def __init__(self, history: History, urls: list[str], node_ids: list[str], seed: int,
                 request_timeout_s: float = 6.0, key: str | None = None) -> None:
        self.headers = {"Content-Type": "application/json"}
        if key:
            self.headers["Authorization"] = f"Bearer {key}"
        self.history = history
        self.urls = urls
        self.node_ids = node_ids
        self.rng = random.Random(seed)
        self.timeout = request_timeout_s
        self.stop_producing = asyncio.Event()
        self.stop_working = asyncio.Event()
        self.draining = False
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Clients":
        connector = aiohttp.TCPConnector(limit=0, force_close=False)
        self.session = aiohttp.ClientSession(connector=connector)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.session is not None:
            await self.session.close()

    # ----- one recorded call ---------------------------------------------------------------------------------
    async def call(self, client: str, kind: str, path: str, body: dict, args: dict | None = None,
                   node: int | None = None, timeout: float | None = None) -> tuple[str, int | None, Any]:
        assert self.session is not None
        node = self.rng.randrange(len(self.urls)) if node is None else node
        op = self.history.invoke(client, self.node_ids[node], kind, args if args is not None else body)
        try:
            async with self.session.post(self.urls[node] + path, data=orjson.dumps(body), headers=self.headers,
                                         timeout=aiohttp.ClientTimeout(total=timeout or self.timeout)) as resp:
                raw = await resp.read()
                status = resp.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            self.history.complete(op, UNKNOWN)
            return UNKNOWN, None, None
        try:
            data = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            data = None
        if 200 <= status < 300:
            outcome = OK
        elif status in UNKNOWN_STATUS or status >= 500 and status not in RETRYABLE:
            outcome = UNKNOWN
        else:
            outcome = FAIL
        self.history.complete(op, outcome, status, data)
        return outcome, status, data

    # ----- producers ---------------------------------------------------------------------------------------
    def _job(self, token: str, keyed: bool) -> dict:
        rng = self.rng
        job = {"payload": {"token": token, "n": rng.randrange(1000)}, "queue": rng.choice(QUEUES),
               "priority": rng.randrange(3), "max_retries": rng.randrange(2, 7),
               "backoff": {"base_ms": 50, "max_ms": 500}}
        if keyed:
            job["idempotency_key"] = f"key-{token}"
        if rng.random() < 0.1:
            job["delay_ms"] = rng.randrange(100, 2000)
        return job

    async def producer(self, name: str) -> None:
        seq = 0
        while not self.stop_producing.is_set():
            keyed = self.rng.random() < 0.5
            if self.rng.random() < 0.3:
                jobs = []
                for _ in range(5):
                    seq += 1
                    jobs.append(self._job(f"{name}-{seq}", keyed))
                kind, path, body = "submit_batch", "/jobs/batch", {"jobs": jobs}
            else:
                seq += 1
                kind, path, body = "submit", "/jobs", self._job(f"{name}-{seq}", keyed)
            for attempt in range(12):
                outcome, status, _ = await self.call(name, kind, path, body)
                if outcome == OK or (outcome == FAIL and status not in RETRYABLE):
                    break
                if outcome == UNKNOWN and not keyed:
                    break  # without a key a retry could make a second job: a careful client does not
                await asyncio.sleep(min(1.0, 0.05 * 2 ** attempt))
            await asyncio.sleep(self.rng.uniform(0.0, 0.02))

    # ----- workers -----------------------------------------------------------------------------------------
    async def worker(self, name: str) -> None:
        while not self.stop_working.is_set():
            lease_ms = self.rng.randrange(1500, 4000)
            wait_ms = self.rng.randrange(200, 1000)
            body: dict = {"queues": list(QUEUES), "lease_ms": lease_ms, "wait_ms": wait_ms, "worker_id": name}
            if self.draining:
                body["max_jobs"] = 10
            elif self.rng.random() < 0.4:
                body["max_jobs"] = 3
            outcome, status, data = await self.call(name, "lease", "/jobs/lease", body,
                                                    timeout=wait_ms / 1000 + self.timeout)
            if outcome != OK or not data:
                await asyncio.sleep(0.05 if outcome != FAIL or status != 404 else 0)
                continue
            jobs = data["jobs"] if "jobs" in data else [data]
            for job in jobs:
                await self._handle(name, job)

    async def _handle(self, name: str, job: dict) -> None:
        job_id, token = job["job_id"], job["lease_token"]
        roll = 0.0 if self.draining else self.rng.random()
        if not self.draining:
            await asyncio.sleep(self.rng.uniform(0.005, 0.03))  # the work
        if roll > 0.93:
            return  # walk away: the lease expires and the job is retried
        if roll > 0.83:
            body = {"lease_token": token, "error": "flaky", "retry_in_ms": self.rng.randrange(0, 200)}
            await self._retrying(name, "nack", f"/jobs/{job_id}/nack", body, job_id)
            return
        if roll > 0.75:
            body = {"lease_token": token, "lease_ms": 4000, "progress": 50}
            await self._retrying(name, "extend", f"/jobs/{job_id}/extend", body, job_id)
        await self._retrying(name, "ack", f"/jobs/{job_id}/ack", {"lease_token": token, "result": {"by": name}},
                             job_id)

    async def _retrying(self, name: str, kind: str, path: str, body: dict, job_id: str) -> None:
        for attempt in range(5):
            outcome, status, _ = await self.call(name, kind, path, body, args={"job_id": job_id, **body})
            if outcome == OK or (outcome == FAIL and status not in RETRYABLE):
                return  # done, or refused for good (409: the lease is gone)
            await asyncio.sleep(0.1 * (attempt + 1))
