"""A deterministic key-value state machine with the JobStore interface the replica needs.

Used by the Raft-level tests so that replication and durability are checked on their own, with a state
whose every acknowledged write is easy to look up. The Raft underneath is the real one.
"""
from __future__ import annotations

import hashlib

import orjson


class KVStore:
    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.clock = 0
        self.applied = 0

    KINDS = ("put", "noop", "expire", "purge")

    def unknown_to_this_build(self, command) -> str | None:
        if isinstance(command, dict) and isinstance(command.get("kind"), str) and command["kind"] not in self.KINDS:
            return f"unknown command kind {command['kind']!r}"
        return None

    def apply(self, command: dict, events: list | None = None) -> dict:
        self.clock = max(self.clock, int(command.get("now", 0)))
        kind = command.get("kind")
        if kind == "put":
            self.data[command["key"]] = command["value"]
            self.applied += 1
            return {"key": command["key"], "count": len(self.data)}
        if kind in ("noop", "expire", "purge"):
            return {}
        return {"error": {"code": "validation_error", "message": f"unknown kind {kind!r}"}}

    def snapshot(self) -> bytes:
        return orjson.dumps({"v": 1, "clock": self.clock, "applied": self.applied,
                             "data": self.data}, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def restore(cls, data: bytes) -> "KVStore":
        raw = orjson.loads(data)
        store = cls()
        store.clock, store.applied, store.data = raw["clock"], raw["applied"], dict(raw["data"])
        return store

    def digest(self) -> str:
        return hashlib.sha256(self.snapshot()).hexdigest()

    def next_due_ms(self) -> int | None:
        return None

    def next_purge_ms(self, retention_ms: int) -> int | None:
        return None
