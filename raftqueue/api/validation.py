"""Request bodies -> store commands, validated once at the edge (DESIGN.md, "Errors and bad input").

Every check names the field it rejects. Limits keep one request from costing the cluster much: they are
module constants (`Limits`) so the security issue can tighten them in one place. Defaults that depend on
node configuration (lease length, retries, backoff) are filled here, on the leader, so every replica applies
the same command.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from raftqueue.api.errors import ApiError, invalid
from raftqueue.timefmt import parse_rfc3339

INT32 = (1 << 31) - 1
QUEUE_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")  # fullmatch: "$" would let a final "\n" through
JOB_ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")
DAY_MS = 24 * 3600 * 1000


@dataclass
class Limits:
    max_payload_bytes: int = 1024 * 1024
    max_batch_jobs: int = 1000
    max_batch_acks: int = 1000
    max_lease_jobs: int = 100
    max_wait_ms: int = 30_000
    max_tags: int = 32
    max_tag_key: int = 64
    max_tag_value: int = 256
    max_depends_on: int = 100
    max_key_len: int = 256
    max_text: int = 8192
    max_lease_ms: int = 12 * 3600 * 1000
    min_lease_ms: int = 100
    max_delay_ms: int = 366 * DAY_MS
    max_retries: int = 1000


@dataclass
class Defaults:
    lease_ms: int = 30_000
    max_retries: int = 3
    backoff_base_ms: int = 1000
    backoff_max_ms: int = 300_000


JOB_FIELDS = {"payload", "queue", "priority", "run_at", "delay_ms", "max_retries", "lease_ms", "backoff",
              "idempotency_key", "tags", "depends_on"}


def parse_json(body: bytes, *, required: bool = True) -> Any:
    if not body or not body.strip():
        if required:
            raise ApiError(400, "invalid_json", "the request body must be a JSON object")
        return {}
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"the request body is not valid JSON: {exc}") from None


def obj(value: Any, field: str = "body") -> dict:
    if not isinstance(value, dict):
        raise invalid(field, "must be a JSON object")
    return value


def reject_unknown(body: dict, allowed: set[str], field: str = "") -> None:
    for key in body:
        if key not in allowed:
            name = f"{field}.{key}" if field else key
            raise invalid(name, f"unknown field (allowed: {', '.join(sorted(allowed))})")


def integer(body: dict, key: str, field: str, lo: int, hi: int, default: Any = None) -> Any:
    if body.get(key) is None:
        return default
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer")
    if not lo <= value <= hi:
        raise invalid(field, f"must be between {lo} and {hi}")
    return value


def text(body: dict, key: str, field: str, max_len: int, default: Any = None, pattern: re.Pattern | None = None,
         allow_empty: bool = False) -> Any:
    if body.get(key) is None:
        return default
    value = body[key]
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if not value and not allow_empty:
        raise invalid(field, "must not be empty")
    if len(value) > max_len:
        raise invalid(field, f"must be at most {max_len} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise invalid(field, "may contain only letters, digits and _ - . : (at most 128 characters)")
    return value


def boolean(body: dict, key: str, field: str, default: bool = False) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(field, "must be true or false")
    return value


def json_text(value: Any, field: str, limit: int) -> str:
    """Encode a JSON value to the text the store keeps, enforcing the size limit."""
    try:
        encoded = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise invalid(field, f"cannot be stored as JSON ({exc})") from None
    if len(encoded) > limit:
        raise ApiError(413, "payload_too_large", f"{field} is {len(encoded)} bytes; the limit is {limit} bytes")
    return encoded.decode()


_DIGITS = re.compile(r"[0-9]{1,18}")
CURSOR_RE = re.compile(r"[0-9]{1,18}\.[A-Za-z0-9_.:\-]{1,64}")  # "<created_at>.<job_id>" (store.list_jobs)


def query_int(text: str, field: str, lo: int, hi: int) -> int:
    """A whole number from a query string, digits only: int() would also take "5_0", " +5" or "٥"."""
    if not _DIGITS.fullmatch(text):
        raise invalid(field, "must be an integer")
    number = int(text)
    if not lo <= number <= hi:
        raise invalid(field, f"must be between {lo} and {hi}")
    return number


def queue_name(value: Any, field: str = "queue") -> str:
    if not isinstance(value, str) or not QUEUE_RE.fullmatch(value):
        raise invalid(field, "must be 1-128 letters, digits or _ - . :")
    return value


def job_id(value: Any, field: str = "job_id") -> str:
    if not isinstance(value, str) or not JOB_ID_RE.fullmatch(value):
        raise invalid(field, "is not a valid job id")
    return value


def job_body(body: Any, limits: Limits, defaults: Defaults, field: str = "") -> dict:
    """One job of POST /jobs or POST /jobs/batch -> the store's submit fields (without kind/v/now).

    Absent fields cost nothing: most jobs carry a payload and a queue, and batches carry up to 1,000 jobs."""
    prefix = f"{field}." if field else ""
    if not isinstance(body, dict):
        raise invalid(field or "body", "must be a JSON object")
    if not body.keys() <= JOB_FIELDS:
        reject_unknown(body, JOB_FIELDS, field)
    if "payload" not in body:
        raise invalid(f"{prefix}payload", "is required")
    get = body.get
    job: dict[str, Any] = {"payload": json_text(body["payload"], f"{prefix}payload", limits.max_payload_bytes)}
    queue = get("queue")
    job["queue"] = "default" if queue is None else queue_name(queue, f"{prefix}queue")
    job["priority"] = 0 if get("priority") is None else integer(body, "priority", f"{prefix}priority", -INT32, INT32)
    if get("run_at") is not None:
        if get("delay_ms") is not None:
            raise invalid(f"{prefix}run_at", "give run_at or delay_ms, not both")
        try:
            job["run_at"] = parse_rfc3339(body["run_at"])
        except (ValueError, TypeError) as exc:
            raise invalid(f"{prefix}run_at", f"must be an RFC 3339 time ({exc})") from None
    else:
        job["run_at"] = None
    job["delay_ms"] = None if get("delay_ms") is None else integer(body, "delay_ms", f"{prefix}delay_ms", 0,
                                                                    limits.max_delay_ms)
    job["max_retries"] = defaults.max_retries if get("max_retries") is None else integer(
        body, "max_retries", f"{prefix}max_retries", 0, limits.max_retries)
    job["lease_ms"] = None if get("lease_ms") is None else integer(body, "lease_ms", f"{prefix}lease_ms",
                                                                    limits.min_lease_ms, limits.max_lease_ms)
    backoff = get("backoff")
    if backoff is None:
        job["backoff"] = {"base_ms": defaults.backoff_base_ms, "max_ms": defaults.backoff_max_ms}
    else:
        backoff = obj(backoff, f"{prefix}backoff")
        reject_unknown(backoff, {"base_ms", "max_ms"}, f"{prefix}backoff")
        base = integer(backoff, "base_ms", f"{prefix}backoff.base_ms", 1, limits.max_delay_ms,
                       defaults.backoff_base_ms)
        most = integer(backoff, "max_ms", f"{prefix}backoff.max_ms", 1, limits.max_delay_ms,
                       max(base, defaults.backoff_max_ms))
        if most < base:
            raise invalid(f"{prefix}backoff.max_ms", "must be at least base_ms")
        job["backoff"] = {"base_ms": base, "max_ms": most}
    job["idempotency_key"] = None if get("idempotency_key") is None else text(
        body, "idempotency_key", f"{prefix}idempotency_key", limits.max_key_len)
    tags = get("tags")
    if tags:
        tags = obj(tags, f"{prefix}tags")
        if len(tags) > limits.max_tags:
            raise invalid(f"{prefix}tags", f"at most {limits.max_tags} tags")
        for key, value in tags.items():
            if not key or len(key) > limits.max_tag_key:
                raise invalid(f"{prefix}tags", f"tag names must be 1-{limits.max_tag_key} characters")
            if not isinstance(value, str) or len(value) > limits.max_tag_value:
                raise invalid(f"{prefix}tags.{key}", f"must be a string of at most {limits.max_tag_value} characters")
    elif tags is not None and not isinstance(tags, dict):
        raise invalid(f"{prefix}tags", "must be a JSON object")
    job["tags"] = tags or {}
    depends = get("depends_on")
    if depends:
        if not isinstance(depends, list):
            raise invalid(f"{prefix}depends_on", "must be a list of job ids")
        if len(depends) > limits.max_depends_on:
            raise invalid(f"{prefix}depends_on", f"at most {limits.max_depends_on} job ids")
        job["depends_on"] = [job_id(d, f"{prefix}depends_on[{i}]") for i, d in enumerate(depends)]
    elif depends is not None and not isinstance(depends, list):
        raise invalid(f"{prefix}depends_on", "must be a list of job ids")
    else:
        job["depends_on"] = []
    return job


def submit_command(body: Any, limits: Limits, defaults: Defaults) -> dict:
    return {"kind": "submit", **job_body(body, limits, defaults)}


def batch_command(body: Any, limits: Limits, defaults: Defaults) -> dict:
    body = obj(body)
    reject_unknown(body, {"jobs"})
    jobs = body.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise invalid("jobs", "must be a non-empty list")
    if len(jobs) > limits.max_batch_jobs:
        raise ApiError(413, "payload_too_large", f"jobs: at most {limits.max_batch_jobs} jobs per batch")
    return {"kind": "submit_batch", "jobs": [job_body(j, limits, defaults, f"jobs[{i}]") for i, j in enumerate(jobs)]}


def lease_command(body: Any, limits: Limits, defaults: Defaults) -> tuple[dict, int, bool]:
    """-> (command, wait_ms, list_form). list_form: the client asked with max_jobs, answer {"jobs": [...]}."""
    body = obj(body)
    reject_unknown(body, {"queue", "queues", "max_jobs", "lease_ms", "wait_ms", "worker_id"})
    queues: list[str] = []
    if body.get("queue") is not None:
        queues.append(queue_name(body["queue"]))
    if body.get("queues") is not None:
        if not isinstance(body["queues"], list) or len(body["queues"]) > 64:
            raise invalid("queues", "must be a list of at most 64 queue names")
        queues.extend(queue_name(q, f"queues[{i}]") for i, q in enumerate(body["queues"]))
    if not queues:
        queues = ["default"]
    max_jobs = integer(body, "max_jobs", "max_jobs", 1, limits.max_lease_jobs, 1)
    wait_ms = integer(body, "wait_ms", "wait_ms", 0, limits.max_wait_ms, 0)
    command = {"kind": "lease", "queues": sorted(set(queues)), "max_jobs": max_jobs,
               "lease_ms": integer(body, "lease_ms", "lease_ms", limits.min_lease_ms, limits.max_lease_ms, None),
               "default_lease_ms": defaults.lease_ms,
               "worker_id": text(body, "worker_id", "worker_id", 128)}
    return command, wait_ms, "max_jobs" in body


def _ack_fields(body: dict, limits: Limits, field: str) -> dict:
    out: dict[str, Any] = {"lease_token": text(body, "lease_token", f"{field}lease_token", 128),
                           "result": None, "result_error": None}
    if "result" in body and body.get("result_error") is not None:
        raise invalid(f"{field}result", "give result or result_error, not both")
    if "result" in body:
        out["result"] = json_text(body["result"], f"{field}result", limits.max_payload_bytes)
    out["result_error"] = text(body, "result_error", f"{field}result_error", limits.max_text, allow_empty=True)
    return out


def ack_command(job: str, body: Any, limits: Limits) -> dict:
    body = obj(body)
    reject_unknown(body, {"result", "result_error", "lease_token"})
    return {"kind": "ack", "job_id": job_id(job), **_ack_fields(body, limits, "")}


def ack_batch_command(body: Any, limits: Limits) -> dict:
    body = obj(body)
    reject_unknown(body, {"acks"})
    acks = body.get("acks")
    if not isinstance(acks, list) or not acks:
        raise invalid("acks", "must be a non-empty list")
    if len(acks) > limits.max_batch_acks:
        raise ApiError(413, "payload_too_large", f"acks: at most {limits.max_batch_acks} per request")
    items = []
    for i, item in enumerate(acks):
        field = f"acks[{i}]"
        item = obj(item, field)
        reject_unknown(item, {"job_id", "result", "result_error", "lease_token"}, field)
        items.append({"job_id": job_id(item.get("job_id"), f"{field}.job_id"),
                      **_ack_fields(item, limits, f"{field}.")})
    return {"kind": "ack_batch", "acks": items}


def nack_command(job: str, body: Any, limits: Limits) -> dict:
    body = obj(body)
    reject_unknown(body, {"lease_token", "error", "retry_in_ms"})
    return {"kind": "nack", "job_id": job_id(job),
            "lease_token": text(body, "lease_token", "lease_token", 128),
            "error": text(body, "error", "error", limits.max_text, "", allow_empty=True) or "",
            "retry_in_ms": integer(body, "retry_in_ms", "retry_in_ms", 0, limits.max_delay_ms, None)}


def release_command(job: str, body: Any) -> dict:
    """The lease token is required: a release does not use the attempt, so it must come from the lease holder."""
    body = obj(body)
    reject_unknown(body, {"lease_token"})
    token = text(body, "lease_token", "lease_token", 128)
    if token is None:
        raise invalid("lease_token", "is required")
    return {"kind": "release", "job_id": job_id(job), "lease_token": token}


def extend_command(job: str, body: Any, limits: Limits, defaults: Defaults) -> dict:
    body = obj(body)
    reject_unknown(body, {"lease_token", "lease_ms", "progress", "checkpoint"})
    checkpoint = None
    if "checkpoint" in body:
        checkpoint = json_text(body["checkpoint"], "checkpoint", limits.max_payload_bytes)
    return {"kind": "extend", "job_id": job_id(job),
            "lease_token": text(body, "lease_token", "lease_token", 128),
            "lease_ms": integer(body, "lease_ms", "lease_ms", limits.min_lease_ms, limits.max_lease_ms,
                                defaults.lease_ms),
            "progress": integer(body, "progress", "progress", 0, 100, None),
            "checkpoint": checkpoint}


def cancel_command(job: str, body: Any, limits: Limits) -> dict:
    body = obj(body)
    reject_unknown(body, {"reason"})
    return {"kind": "cancel", "job_id": job_id(job), "reason": text(body, "reason", "reason", limits.max_text)}


def retry_command(job: str, body: Any) -> dict:
    body = obj(body)
    reject_unknown(body, {"reset_attempts"})
    return {"kind": "retry", "job_id": job_id(job), "reset_attempts": boolean(body, "reset_attempts", "reset_attempts")}


def retry_dead_command(body: Any) -> dict:
    body = obj(body)
    reject_unknown(body, {"queue"})
    queue = body.get("queue")
    return {"kind": "retry_dead", "queue": queue_name(queue) if queue is not None else None}
