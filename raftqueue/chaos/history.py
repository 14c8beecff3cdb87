"""The chaos run's record: every client operation as an invoke/complete pair, every fault, a header.

Outcomes: `ok` (a 2xx answer), `fail` (a definite error answer: 4xx, 409, 503 no_leader), `unknown` (timeout,
connection error, 504 commit_timeout: the write may or may not have happened). The checker reads this and the
final state; nothing here judges.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import orjson

OK, FAIL, UNKNOWN = "ok", "fail", "unknown"


@dataclass
class Op:
    op_id: int
    client: str
    node: str
    kind: str               # submit, submit_batch, lease, ack, ack_batch, nack, extend, cancel, get
    args: dict
    invoke_t: float
    complete_t: float | None = None
    outcome: str | None = None
    status: int | None = None
    result: Any = None

    @property
    def latency_ms(self) -> float | None:
        return None if self.complete_t is None else (self.complete_t - self.invoke_t) * 1000


@dataclass
class Fault:
    t: float
    fault: str              # kill, restart, pause, resume, partition, heal, clock_skew, clock_reset, kill_all, ...
    node: str | None = None
    detail: dict = field(default_factory=dict)


class History:
    """Cheap to append to from many asyncio tasks (single-threaded: no locks needed)."""

    def __init__(self, header: dict | None = None, clock=time.monotonic) -> None:
        self.header = dict(header or {})
        self.ops: list[Op] = []
        self.faults: list[Fault] = []
        self._clock = clock
        self._t0 = clock()
        self._ids = itertools.count(1)

    def now(self) -> float:
        return self._clock() - self._t0

    def invoke(self, client: str, node: str, kind: str, args: dict) -> Op:
        op = Op(next(self._ids), client, node, kind, args, self.now())
        self.ops.append(op)
        return op

    def complete(self, op: Op, outcome: str, status: int | None = None, result: Any = None) -> Op:
        op.complete_t = self.now()
        op.outcome = outcome
        op.status = status
        op.result = result
        return op

    def fault(self, fault: str, node: str | None = None, **detail) -> Fault:
        event = Fault(self.now(), fault, node, detail)
        self.faults.append(event)
        return event

    # ----- files --------------------------------------------------------------------------------------------
    def write(self, path: str | Path) -> None:
        with open(path, "wb") as f:
            f.write(orjson.dumps({"type": "header", **self.header}) + b"\n")
            for fault in self.faults:
                f.write(orjson.dumps({"type": "fault", **asdict(fault)}) + b"\n")
            for op in self.ops:
                f.write(orjson.dumps({"type": "op", **asdict(op)}) + b"\n")

    @classmethod
    def read(cls, path: str | Path) -> "History":
        history = cls()
        with open(path, "rb") as f:
            for line in f:
                record = orjson.loads(line)
                kind = record.pop("type")
                if kind == "header":
                    history.header = record
                elif kind == "fault":
                    history.faults.append(Fault(**record))
                elif kind == "op":
                    history.ops.append(Op(**record))
        return history

    @classmethod
    def from_records(cls, ops: Iterable[Op], faults: Iterable[Fault] = (), header: dict | None = None) -> "History":
        history = cls(header)
        history.ops = list(ops)
        history.faults = list(faults)
        return history
