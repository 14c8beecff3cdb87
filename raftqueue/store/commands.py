"""Store commands: the contract between the leader that proposes them and every replica that applies them.

Every command is a dict with `kind` (str), `v` (int, 1) and `now` (int ms, the leader's clock). Times are int
ms since the epoch. Job ids are opaque strings the leader made. `payload`, `result` and `checkpoint` are JSON
*text* (already encoded); the store keeps and returns them as given and never parses them.

The store clock is max(clock, now): a new leader whose clock is behind cannot move time back. A command that
is malformed or impossible returns `{"error": {"code", "message"}}` and changes nothing, not even the clock.
Codes: `validation_error` (malformed, unknown kind/version, unknown or finished depends_on), `not_found`
(unknown job id), `conflict` (wrong state, wrong or stale lease token, expired lease), `forbidden` (revoking
someone else's key). API-key commands (create_key, revoke_key, touch_keys) are documented in keys.py.

kind            fields                                                       result
submit          job_id, payload, queue="default", priority=0, run_at|None    {job_id, state, created_at, run_at,
                or delay_ms|None, max_retries=3, lease_ms|None,               duplicate}
                backoff={base_ms,max_ms}, idempotency_key|None, tags={},
                depends_on=[]
submit_batch    jobs: [submit fields]   all or nothing                       {job_ids, states, duplicates}
lease           queues ([] = all), max_jobs>=1, lease_ms|None,               {jobs: [{job_id, payload, queue,
                default_lease_ms, worker_id|None, token_base                  priority, lease_until, lease_token,
                                                                              attempt, max_retries, tags,
                                                                              checkpoint, progress}]}
ack             job_id, lease_token|None, result|None, result_error|None     {job_id, state}
ack_batch       acks: [ack fields]      per item                             {results: [{job_id, state} |
                                                                              {job_id, error}]}
nack            job_id, lease_token|None, error, retry_in_ms|None            {job_id, state, run_at}
release         job_id, lease_token (required)                               {job_id, state, attempts}
extend          job_id, lease_token|None, lease_ms, progress|None,           {job_id, lease_until}
                checkpoint|None
cancel          job_id, reason|None                                          {job_id, state}
retry           job_id, reset_attempts=False                                 {job_id, state}
retry_dead      queue|None                                                   {count}
pause_queue     queue                                                        {queue, paused}
resume_queue    queue                                                        {queue, paused}
expire          (now only)                                                   {expired, dead, promoted}
purge           retention_ms                                                 {purged}
noop            -                                                            {}

Semantics worth knowing:
- A job starts SCHEDULED if run_at is in the future or a depends_on job is not ACKED yet, else READY.
  depends_on must name existing jobs that are not DEAD or CANCELLED.
- Lease order among runnable jobs: priority (high first), run_at, created_at, job_id. Runnable: READY, or
  SCHEDULED/RETRY whose run_at <= clock with every dependency ACKED (lease promotes those first).
  Paused queues are skipped. Each leased job: RUNNING, attempts += 1, lease_until = clock + (command
  lease_ms, else the job's lease_ms, else default_lease_ms), lease_token = f"{token_base}.{i}".
- Effective lease checks use the store clock: ack, nack, release and extend need RUNNING, lease_until >
  clock and, when given, the matching token. A token-less ack (the seed API) is accepted only under those same
  conditions; it cannot tell a stale worker from the current one, so it is documented as unsafe.
- Nack and lease expiry (`expire`) use up the attempt: RETRY with run_at = clock + delay (retry_in_ms, else
  the job's backoff with deterministic jitter), or DEAD when attempts == 1 + max_retries.
- release gives a job back without using the attempt: READY at once with its run_at unchanged (so it keeps
  its place in lease order), attempts -= 1, lease cleared, progress and checkpoint kept. Same lease checks
  as nack, but the token is required: only the lease holder may give an attempt back.
- extend sets lease_until = clock + lease_ms (it may shorten a lease: a worker can hand a job back early).
- cancel works from SCHEDULED, READY, RETRY and RUNNING (the lease is revoked). Terminal states (ACKED, DEAD,
  CANCELLED) are left only through retry, which makes the job READY now and ignores its dependencies;
  without reset_attempts it grants one more attempt by raising max_retries to the attempts already used.
- When a job ends DEAD or CANCELLED, every job waiting on it (transitively) is CANCELLED with a last_error
  naming it, so no job waits for ever. When it is ACKED, its dependents become READY (or SCHEDULED until
  their run_at).
- An idempotency key maps to its job for as long as the job exists; purge removes both. purge drops finished
  jobs whose updated_at <= clock - retention_ms.
- `events` (optional list passed to apply) receives (kind, job_id, state, queue) per job change, kind in
  submitted, leased, acked, nacked, released, retry, dead, cancelled, ready.
"""
from __future__ import annotations

from typing import Any

COMMAND_VERSION = 1
INT_LIMIT = 1 << 62


class Invalid(Exception):
    """A malformed command: becomes a validation_error result."""


def error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def get_str(cmd: dict, key: str, *, optional: bool = False, default: Any = None, max_len: int = 1 << 20) -> Any:
    value = cmd.get(key)
    if value is None:
        if optional:
            return default
        raise Invalid(f"{key} is required")
    if not isinstance(value, str) or len(value) > max_len:
        raise Invalid(f"{key} must be a string")
    return value


def get_int(cmd: dict, key: str, *, optional: bool = False, default: Any = None, lo: int = -INT_LIMIT,
            hi: int = INT_LIMIT) -> Any:
    value = cmd.get(key)
    if value is None:
        if optional:
            return default
        raise Invalid(f"{key} is required")
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid(f"{key} must be an integer in [{lo}, {hi}]")
    return value


def get_bool(cmd: dict, key: str, default: bool = False) -> bool:
    value = cmd.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Invalid(f"{key} must be a boolean")
    return value


def get_tags(cmd: dict) -> dict:
    tags = cmd.get("tags")
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items()):
        raise Invalid("tags must map strings to strings")
    return tags


def get_ids(cmd: dict, key: str) -> list[str]:
    value = cmd.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise Invalid(f"{key} must be a list of job ids")
    return value


def get_backoff(cmd: dict) -> tuple[int, int] | None:
    value = cmd.get("backoff")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid("backoff must be an object")
    base = get_int(value, "base_ms", optional=True, default=1000, lo=1)
    most = get_int(value, "max_ms", optional=True, default=max(base, 300_000), lo=1)
    if most < base:
        raise Invalid("backoff.max_ms must be >= base_ms")
    return base, most
