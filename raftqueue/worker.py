"""`Worker`: runs a handler for the jobs of some queues, the way a production worker should.

- long-polls for work, never more jobs in hand than `concurrency`;
- heartbeats: extends each lease every `lease_ms * heartbeat_fraction` while its handler runs, carrying the
  latest progress and checkpoint the handler reported;
- acks with the handler's return value, nacks with the exception text (the job's backoff applies);
- a handler that runs past `job_timeout_s` is abandoned and nacked (a sync handler's thread cannot be killed:
  it is left to finish in the background and its result is dropped);
- a lost lease (409 on heartbeat: it expired and another worker may have the job) cancels the handler's result;
- what the server refuses as written (400/413: a checkpoint or result over --max-payload, a long error text) is
  never left to a lease expiry, which would only run the job again: the checkpoint is dropped and the lease kept,
  the error text shortened, and a refused result acked as `result_error` saying why;
- `stop()` (SIGTERM/SIGINT under `run()`) stops leasing, lets in-flight jobs finish for `shutdown_grace_s`, then
  gives the rest back (release: READY at once for another worker, and the attempt is not counted).

The handler gets a `JobContext`: the job's fields plus `progress(pct, checkpoint=...)`. A checkpoint saved by
one attempt is in `ctx.checkpoint` of the next.
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import socket
import traceback
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from raftqueue.client.async_client import _UNSET, MAX_TEXT, AsyncClient
from raftqueue.client.errors import Conflict, NotFound, PayloadTooLarge, RaftqueueError, ValidationError
from raftqueue.client.models import LeasedJob

log = logging.getLogger("raftqueue.worker")
# A 400 or 413 (or a value the client cannot encode as JSON: a set, an object): the request as written will never
# be taken, so waiting for the lease to expire would only run the job again, with the same refusal, until DEAD.
_REFUSED = (ValidationError, PayloadTooLarge)
Handler = Callable[["JobContext"], Any] | Callable[["JobContext"], Awaitable[Any]]


class JobContext:
    """What a handler receives. Thread-safe: a sync handler (run in a thread) may call progress()."""

    def __init__(self, job: LeasedJob, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        self.job = job
        self.job_id = job.job_id
        self.payload = job.payload
        self.queue = job.queue
        self.attempt = job.attempt
        self.max_retries = job.max_retries
        self.tags = job.tags
        self.checkpoint = job.checkpoint
        self._loop = loop
        self._wake = wake
        self.pending: dict[str, Any] = {}
        self.lost = False

    def progress(self, percent: int | None = None, *, checkpoint: Any = _UNSET) -> None:
        """Report progress (0..100) and/or save a checkpoint; sent with the next heartbeat, which is sent now."""
        if percent is not None:
            self.pending["progress"] = max(0, min(100, int(percent)))
        if checkpoint is not _UNSET:
            self.pending["checkpoint"] = checkpoint
            self.checkpoint = checkpoint
        self._loop.call_soon_threadsafe(self._wake.set)

    @property
    def is_lease_lost(self) -> bool:
        """True once the lease was lost: the job may be running elsewhere; stop and return."""
        return self.lost


class Worker:
    def __init__(self, handler: Handler, queues: str | Sequence[str] = "default", *,
                 client: AsyncClient | None = None, urls: str | Sequence[str] | None = None, key: Any = _UNSET,
                 concurrency: int = 4, lease_ms: int = 30_000, heartbeat_fraction: float = 1 / 3,
                 job_timeout_s: float | None = 300.0, poll_wait_ms: int = 5_000, shutdown_grace_s: float = 30.0,
                 worker_id: str | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if not 0 < heartbeat_fraction < 1:
            raise ValueError("heartbeat_fraction must be between 0 and 1")
        self.handler = handler
        self.queues = [queues] if isinstance(queues, str) else list(queues)
        self.client = client if client is not None else AsyncClient(urls, key)
        self._own_client = client is None
        self.concurrency = concurrency
        self.lease_ms = lease_ms
        self.heartbeat_s = lease_ms / 1000 * heartbeat_fraction
        self.job_timeout_s = job_timeout_s
        self.poll_wait_ms = poll_wait_ms
        self.shutdown_grace_s = shutdown_grace_s
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None))
        self._stopping = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        self.counts = {"acked": 0, "nacked": 0, "timed_out": 0, "lost": 0, "returned": 0}

    # ----- control ---------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop taking work; in-flight jobs finish (or are given back after shutdown_grace_s)."""
        self._stopping.set()
        self._slot_free.set()

    def run(self, install_signals: bool = True) -> dict:
        """Blocking: run until SIGTERM/SIGINT (or stop()); returns the counts."""
        return asyncio.run(self.run_async(install_signals))

    async def run_async(self, install_signals: bool = False, max_jobs: int | None = None) -> dict:
        """Run until stop() (or after `max_jobs` jobs were taken); returns the counts."""
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
        taken = 0
        log.info("worker %s: queues %s, concurrency %d", self.worker_id, ",".join(self.queues), self.concurrency)
        try:
            while not self._stopping.is_set() and (max_jobs is None or taken < max_jobs):
                free = self.concurrency - len(self._tasks)
                if free <= 0:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                    continue
                if max_jobs is not None:
                    free = min(free, max_jobs - taken)
                for job in await self._lease(free):  # one call fetches a job for every free slot
                    taken += 1
                    task = asyncio.ensure_future(self._run_job(job))
                    self._tasks.add(task)
                    task.add_done_callback(self._job_done)
            await self._drain()
        finally:
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            if self._own_client:
                await self.client.close()
        return dict(self.counts)

    def _job_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._slot_free.set()

    async def _lease(self, count: int) -> list[LeasedJob]:
        lease = asyncio.ensure_future(self.client.lease(self.queues, max_jobs=count, lease_ms=self.lease_ms,
                                                        wait_ms=self.poll_wait_ms, worker_id=self.worker_id))
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait({lease, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if lease not in done:
            # stopping: a lease that lands anyway gives its jobs straight back
            lease.add_done_callback(lambda t: asyncio.ensure_future(self._give_back_all(t)))
            return []
        try:
            return lease.result()
        except RaftqueueError as exc:
            log.warning("lease failed: %s", exc)
            await asyncio.sleep(1.0)
            return []

    async def _give_back_all(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        for job in task.result():
            await self._give_back(job)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        done, pending = await asyncio.wait(set(self._tasks), timeout=self.shutdown_grace_s)
        for task in pending:
            task.cancel()  # _run_job gives the job back
        if pending:
            await asyncio.wait(pending, timeout=10)

    # ----- one job ---------------------------------------------------------------------------------------------
    async def _run_job(self, job: LeasedJob) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        ctx = JobContext(job, loop, wake)
        heartbeat = asyncio.ensure_future(self._heartbeat(ctx, wake))
        try:
            work = asyncio.ensure_future(self._call_handler(ctx))
            try:
                result = await asyncio.wait_for(asyncio.shield(work), self.job_timeout_s)
            except asyncio.TimeoutError:
                work.cancel()  # a sync handler's thread runs on; its answer is dropped
                self.counts["timed_out"] += 1
                heartbeat.cancel()
                await self._flush(ctx)
                await self._nack(ctx, f"timed out after {self.job_timeout_s:g} s (abandoned by {self.worker_id})")
                return
            except asyncio.CancelledError:
                work.cancel()
                heartbeat.cancel()
                await self._flush(ctx)
                await self._give_back(job)
                raise
            except Exception as exc:  # noqa: BLE001 - the handler's failure is the job's failure
                heartbeat.cancel()
                await self._flush(ctx)
                text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                await self._nack(ctx, text)
                return
            heartbeat.cancel()
            if ctx.lost:
                self.counts["lost"] += 1
                log.warning("job %s: lease lost while running; result dropped", job.job_id)
                return
            await self._flush(ctx)
            try:
                try:
                    await self.client.ack(job.job_id, job.lease_token, result)
                except _REFUSED as exc:  # as written it never will be: finish the job, saying why it has no result
                    log.error("job %s: the handler's result cannot be stored (%s); acking it with result_error",
                              job.job_id, exc)
                    await self.client.ack(job.job_id, job.lease_token,
                                          result_error=_text(f"the handler's result was refused: {exc}"))
                self.counts["acked"] += 1
            except (Conflict, NotFound) as exc:
                self.counts["lost"] += 1
                log.warning("job %s: ack refused (%s): the lease expired before the handler finished",
                            job.job_id, exc)
            except RaftqueueError as exc:
                log.warning("job %s: ack failed (%s); the lease will expire and the job run again",
                            job.job_id, exc)
        finally:
            heartbeat.cancel()

    async def _call_handler(self, ctx: JobContext) -> Any:
        if self.is_async:
            return await self.handler(ctx)
        return await asyncio.to_thread(self.handler, ctx)

    async def _heartbeat(self, ctx: JobContext, wake: asyncio.Event) -> None:
        while not ctx.lost:
            try:
                await asyncio.wait_for(wake.wait(), self.heartbeat_s)
            except asyncio.TimeoutError:
                pass
            wake.clear()
            await self._flush(ctx, always=True)

    async def _flush(self, ctx: JobContext, always: bool = False) -> None:
        """Send pending progress/checkpoint (and extend the lease)."""
        if ctx.lost or not (always or ctx.pending):
            return
        pending, ctx.pending = ctx.pending, {}
        try:
            try:
                await self.client.extend(ctx.job_id, ctx.job.lease_token, self.lease_ms, **pending)
            except _REFUSED as exc:
                if not pending:
                    raise
                # The progress or checkpoint as written never will be taken: drop it, but keep the lease.
                log.error("job %s: its progress/checkpoint was refused (%s); dropped", ctx.job_id, exc)
                pending = {}
                await self.client.extend(ctx.job_id, ctx.job.lease_token, self.lease_ms)
        except (Conflict, NotFound):
            ctx.lost = True
        except RaftqueueError as exc:
            log.warning("job %s: heartbeat failed: %s", ctx.job_id, exc)
            for name, value in pending.items():
                ctx.pending.setdefault(name, value)

    async def _nack(self, ctx: JobContext, error: str) -> None:
        if ctx.lost:
            self.counts["lost"] += 1
            return
        try:
            try:
                await self.client.nack(ctx.job_id, ctx.job.lease_token, error)
            except _REFUSED as exc:  # the error text as written never will be taken: nack with one that is
                await self.client.nack(ctx.job_id, ctx.job.lease_token, _text(f"{error[:1000]} [the server "
                                                                              f"refused the full text: {exc}]"))
            self.counts["nacked"] += 1
        except RaftqueueError as exc:
            log.warning("job %s: nack failed (%s); the lease will expire", ctx.job_id, exc)

    async def _give_back(self, job: LeasedJob) -> None:
        try:
            await self.client.release(job.job_id, job.lease_token)
            self.counts["returned"] += 1
        except RaftqueueError as exc:
            log.warning("job %s: could not give it back (%s); its lease will expire", job.job_id, exc)


def _text(message: str) -> str:
    return message[:MAX_TEXT]


def load_handler(spec: str) -> Handler:
    """`package.module:function` -> the function (the `raftqueue worker` argument)."""
    import importlib
    import sys
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected module:function, got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    target: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{spec} is not callable")
    return target
