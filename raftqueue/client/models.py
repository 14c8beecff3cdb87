"""Typed results of the SDK: plain dataclasses built from the API's JSON (unknown fields are kept in `extra`)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _build(cls, data: dict, times: tuple[str, ...] = ()):
    names = {f.name for f in fields(cls)}
    known = {k: (parse_time(v) if k in times else v) for k, v in data.items() if k in names and k != "extra"}
    extra = {k: v for k, v in data.items() if k not in names}
    obj = cls(**known)
    if "extra" in names:
        obj.extra = extra
    return obj


@dataclass
class Submitted:
    """The answer to a submit. `created` is False for an idempotent repeat (the first job is returned)."""
    job_id: str
    state: str
    created_at: datetime | None = None
    run_at: datetime | None = None
    created: bool = True

    @classmethod
    def from_json(cls, data: dict, created: bool = True) -> "Submitted":
        obj = _build(cls, data, ("created_at", "run_at"))
        obj.created = created
        return obj


@dataclass
class Job:
    """A job as `GET /jobs/{id}` shows it."""
    job_id: str
    state: str
    queue: str = "default"
    priority: int = 0
    attempts: int = 0
    max_retries: int = 0
    payload: Any = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    run_at: datetime | None = None
    lease_until: datetime | None = None
    result: Any = None
    result_error: str | None = None
    last_error: str | None = None
    progress: int | None = None
    checkpoint: Any = None
    tags: dict[str, str] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    FINISHED = ("ACKED", "DEAD", "CANCELLED")

    @property
    def finished(self) -> bool:
        return self.state in self.FINISHED

    @classmethod
    def from_json(cls, data: dict) -> "Job":
        return _build(cls, data, ("created_at", "updated_at", "run_at", "lease_until"))


@dataclass
class LeasedJob:
    """A job handed to a worker: keep `lease_token` to ack, nack or extend it."""
    job_id: str
    lease_token: str
    payload: Any = None
    queue: str = "default"
    priority: int = 0
    lease_until: datetime | None = None
    attempt: int = 1
    max_retries: int = 0
    tags: dict[str, str] = field(default_factory=dict)
    checkpoint: Any = None
    progress: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> "LeasedJob":
        return _build(cls, data, ("lease_until",))


@dataclass
class JobPage:
    jobs: list[Job]
    next_cursor: str | None = None


@dataclass
class AckResult:
    """One item of a batch ack: `state` on success, `error` (code and message) otherwise."""
    job_id: str
    state: str | None = None
    error: dict | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Stats:
    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    by_queue: dict[str, Any] = field(default_factory=dict)
    runnable: int = 0
    scheduled: int = 0
    total_submits: int = 0
    total_acks: int = 0
    total_retries: int = 0
    total_dead: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> "Stats":
        return _build(cls, data)


@dataclass
class ApiKey:
    key_id: str
    name: str
    owner_id: str
    type: str
    scopes: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    key: str | None = None  # the secret: only in the answer that created it
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict) -> "ApiKey":
        return _build(cls, data, ("created_at", "revoked_at", "last_used_at"))
