"""The job record and its states. A `Job` is a `__slots__` object: memory per job is what limits scale."""
from __future__ import annotations

SCHEDULED, READY, RUNNING, RETRY = "SCHEDULED", "READY", "RUNNING", "RETRY"
ACKED, DEAD, CANCELLED = "ACKED", "DEAD", "CANCELLED"
STATES = (SCHEDULED, READY, RUNNING, RETRY, ACKED, DEAD, CANCELLED)
TERMINAL = frozenset((ACKED, DEAD, CANCELLED))
WAITING = frozenset((SCHEDULED, RETRY))

NO_TAGS: dict = {}          # shared by every job without tags: never mutated
NO_DEPS: tuple = ()
DEFAULT_BACKOFF = (1000, 300_000)

# Field order of a job in snapshots (and so in the digest). Append only; bump the snapshot version otherwise.
FIELDS = ("id", "queue", "state", "priority", "run_at", "created_at", "updated_at", "attempts", "max_retries",
          "lease_ms", "lease_until", "lease_token", "worker_id", "payload", "result", "result_error", "last_error",
          "progress", "checkpoint", "tags", "depends_on", "idempotency_key", "backoff")


class Job:
    __slots__ = FIELDS + ("ver", "waiting")

    def __init__(self) -> None:
        self.ver = 0        # bumped whenever the job leaves an index: stale heap entries are recognised by it
        self.waiting = 0    # depends_on entries not yet ACKED (derived; rebuilt on restore)

    def row(self) -> list:
        return [getattr(self, name) for name in FIELDS]

    @classmethod
    def from_row(cls, row: list) -> "Job":
        job = cls()
        for name, value in zip(FIELDS, row):
            setattr(job, name, value)
        job.tags = job.tags or NO_TAGS
        job.depends_on = tuple(job.depends_on) if job.depends_on else NO_DEPS
        job.backoff = tuple(job.backoff) if job.backoff else DEFAULT_BACKOFF
        return job

    def view(self) -> dict:
        """The read view (GET /jobs/{id}): every field, times as int ms, JSON fields as JSON text."""
        return {"job_id": self.id, "queue": self.queue, "state": self.state, "priority": self.priority,
                "attempts": self.attempts, "max_retries": self.max_retries, "payload": self.payload,
                "created_at": self.created_at, "updated_at": self.updated_at, "run_at": self.run_at,
                "lease_until": self.lease_until, "lease_token": self.lease_token, "worker_id": self.worker_id,
                "result": self.result, "result_error": self.result_error, "last_error": self.last_error,
                "progress": self.progress, "checkpoint": self.checkpoint, "tags": dict(self.tags),
                "depends_on": list(self.depends_on), "idempotency_key": self.idempotency_key}
