"""Store dicts -> API JSON: RFC 3339 times, stored JSON text embedded as-is (orjson.Fragment, no re-parse)."""
from __future__ import annotations

from typing import Any

import orjson

from raftqueue.timefmt import to_rfc3339

_TIME_FIELDS = ("created_at", "updated_at", "run_at", "lease_until")
_JSON_FIELDS = ("payload", "result", "checkpoint")
_HIDDEN = {"lease_token"}  # a reader must not be able to ack someone else's lease


def _fragment(value: str | None) -> Any:
    return orjson.Fragment(value) if value is not None else None


def job_view(job: dict) -> dict:
    """GET /jobs/{id} and GET /jobs items. Optional fields are left out when unset."""
    out: dict[str, Any] = {}
    for key, value in job.items():
        if key in _HIDDEN:
            continue
        if key in _TIME_FIELDS:
            value = to_rfc3339(value)
        elif key in _JSON_FIELDS:
            value = _fragment(value)
        if value is None and key not in ("payload",):
            continue
        out[key] = value
    out.setdefault("tags", {})
    out.setdefault("depends_on", [])
    return out


def leased_view(job: dict) -> dict:
    """One job of a lease answer (POST /jobs/lease)."""
    out = {
        "job_id": job["job_id"],
        "payload": _fragment(job.get("payload")),
        "queue": job.get("queue"),
        "priority": job.get("priority"),
        "lease_until": to_rfc3339(job.get("lease_until")),
        "lease_token": job.get("lease_token"),
        "attempt": job.get("attempt"),
        "max_retries": job.get("max_retries"),
        "tags": job.get("tags") or {},
    }
    if job.get("checkpoint") is not None:
        out["checkpoint"] = _fragment(job["checkpoint"])
    if job.get("progress") is not None:
        out["progress"] = job["progress"]
    return out


def submit_view(result: dict) -> dict:
    return {"job_id": result["job_id"], "state": result["state"],
            "created_at": to_rfc3339(result.get("created_at")), "run_at": to_rfc3339(result.get("run_at"))}
