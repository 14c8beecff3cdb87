"""The job record and its states.

Memory per job limits how many jobs a node holds, so a `Job` keeps only the fields every job uses as
`__slots__`; fields most jobs never set (result, checkpoint, tags, dependencies, ...) live in one optional
dict `x`, created when the first of them is set. Code reads and writes them as ordinary attributes.
"""
from __future__ import annotations

SCHEDULED, READY, RUNNING, RETRY = "SCHEDULED", "READY", "RUNNING", "RETRY"
ACKED, DEAD, CANCELLED = "ACKED", "DEAD", "CANCELLED"
STATES = (SCHEDULED, READY, RUNNING, RETRY, ACKED, DEAD, CANCELLED)
STATE_CODE = {state: i for i, state in enumerate(STATES)}
TERMINAL = frozenset((ACKED, DEAD, CANCELLED))

NO_TAGS: dict = {}          # shared by every job without tags: never mutated
NO_DEPS: tuple = ()
DEFAULT_BACKOFF = (1000, 300_000)

CORE = ("id", "queue", "state", "priority", "run_at", "created_at", "updated_at", "attempts", "max_retries",
        "lease_until", "lease_token", "payload")
EXTRA_DEFAULTS = {"lease_ms": None, "worker_id": None, "result": None, "result_error": None, "last_error": None,
                  "progress": None, "checkpoint": None, "tags": NO_TAGS, "depends_on": NO_DEPS,
                  "idempotency_key": None, "backoff": DEFAULT_BACKOFF}


class _Extra:
    """An attribute kept in the job's optional `x`, created when the first rare field is set; reading an unset
    one gives its default. `x` is None, a (name, value) pair when one field is set (the usual case: a result,
    or the worker id; 56 bytes where a one-key dict takes 184), or a dict for two or more."""

    __slots__ = ("name", "default")

    def __init__(self, name: str, default) -> None:
        self.name = name
        self.default = default

    def __get__(self, job, owner=None):
        if job is None:
            return self
        x = job.x
        if x is None:
            return self.default
        if type(x) is tuple:
            return x[1] if x[0] == self.name else self.default
        return x.get(self.name, self.default)

    def __set__(self, job, value) -> None:
        x, name = job.x, self.name
        if value is None or value == self.default:  # back to the default: forget the field
            if x is None:
                return
            if type(x) is tuple:
                if x[0] == name:
                    job.x = None
            elif name in x:
                del x[name]
                job.x = extras_kept(x)
        elif x is None:
            job.x = (name, value)
        elif type(x) is tuple:
            job.x = (name, value) if x[0] == name else {x[0]: x[1], name: value}
        else:
            x[name] = value


def extras_dict(x) -> dict | None:
    """A job's `x` as a dict (what snapshots store), whichever form it is kept in."""
    return {x[0]: x[1]} if type(x) is tuple else x


def extras_kept(x: dict | None):
    """The form `x` is kept in for a dict read from a snapshot."""
    return next(iter(x.items())) if x is not None and len(x) == 1 else (x or None)


class Job:
    __slots__ = CORE + ("x", "ver", "waiting")

    def __init__(self) -> None:
        self.x = None       # the rarely-set fields (see EXTRA_DEFAULTS and _Extra): None, a pair or a dict
        self.ver = 0        # bumped whenever the job leaves an index: stale heap entries are recognised by it
        self.waiting = 0    # depends_on entries not yet ACKED (derived; rebuilt on restore)

    def view(self) -> dict:
        """The read view (GET /jobs/{id}): every field, times as int ms, JSON fields as JSON text."""
        return {"job_id": self.id, "queue": self.queue, "state": self.state, "priority": self.priority,
                "attempts": self.attempts, "max_retries": self.max_retries, "lease_ms": self.lease_ms,
                "payload": self.payload, "created_at": self.created_at, "updated_at": self.updated_at,
                "run_at": self.run_at, "lease_until": self.lease_until, "lease_token": self.lease_token,
                "worker_id": self.worker_id, "result": self.result, "result_error": self.result_error,
                "last_error": self.last_error, "progress": self.progress, "checkpoint": self.checkpoint,
                "tags": dict(self.tags), "depends_on": list(self.depends_on),
                "idempotency_key": self.idempotency_key}


for _name, _default in EXTRA_DEFAULTS.items():
    setattr(Job, _name, _Extra(_name, _default))
