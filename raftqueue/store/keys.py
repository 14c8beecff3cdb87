"""API keys in the replicated state: metadata and a salted hash, never the secret.

The leader makes the secret, shows it once in the HTTP answer and proposes only `salt` and `hash`
(hex sha256 of salt + ":" + secret), so the secret never reaches the Raft log, a snapshot or a follower.
A key revoked here is refused by every node as soon as that node has applied the revocation.

kind          fields                                                   result
create_key    key_id, name, owner_id, type, scopes, salt, hash         {key_id, name, owner_id, type, scopes,
                                                                        created_at}
revoke_key    key_id, owner_id|None (the caller's, unless admin)       {key_id, revoked_at}   (idempotent)
revoke_own_key key_id, owner_id (the caller's; a key that is not an    {key_id, revoked_at}   (idempotent)
              admin's revokes its owner's keys, never an admin key)
touch_keys    used: {key_id: ms}                                       {touched}
"""
from __future__ import annotations

from raftqueue.store import commands as c
from raftqueue.store.commands import Invalid

KEY_TYPES = ("client", "worker", "admin")
_PUBLIC = ("key_id", "name", "owner_id", "type", "scopes", "created_at", "revoked_at", "last_used_at")


class KeyError_(Exception):  # noqa: N801 (not the builtin KeyError)
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class KeyRegistry:
    def __init__(self) -> None:
        self.keys: dict[str, dict] = {}

    def public(self, record: dict) -> dict:
        return {name: record.get(name) for name in _PUBLIC}

    # ----- commands (called by JobStore.apply with its clock) --------------------------------------------------
    def create(self, cmd: dict, clock: int) -> dict:
        key_id = c.get_str(cmd, "key_id", max_len=64)
        if key_id in self.keys:
            raise Invalid(f"key_id {key_id} already exists")
        key_type = c.get_str(cmd, "type", max_len=16)
        if key_type not in KEY_TYPES:
            raise Invalid(f"type must be one of {', '.join(KEY_TYPES)}")
        scopes = cmd.get("scopes")
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise Invalid("scopes must be a list of strings")
        record = {"key_id": key_id, "name": c.get_str(cmd, "name", max_len=256),
                  "owner_id": c.get_str(cmd, "owner_id", max_len=256), "type": key_type, "scopes": list(scopes),
                  "salt": c.get_str(cmd, "salt", max_len=128), "hash": c.get_str(cmd, "hash", max_len=128),
                  "created_at": clock, "revoked_at": None, "last_used_at": None}
        self.keys[key_id] = record
        return {k: record[k] for k in ("key_id", "name", "owner_id", "type", "scopes", "created_at")}

    def revoke(self, cmd: dict, clock: int, by_owner: bool = False) -> dict:
        """`revoke_key`, or with `by_owner` `revoke_own_key`: a new kind rather than a new field, so that a build
        without the admin-key rule stops at it instead of revoking what newer replicas refuse to."""
        key_id = c.get_str(cmd, "key_id", max_len=64)
        owner = c.get_str(cmd, "owner_id", optional=not by_owner, max_len=256)
        record = self.keys.get(key_id)
        if record is None:
            raise KeyError_("not_found", f"no key {key_id}")
        if owner is not None and record["owner_id"] != owner:
            raise KeyError_("forbidden", "only the key's owner or an admin may revoke it")
        if by_owner and record["type"] == "admin":  # a worker key must not lock its team's admin out
            raise KeyError_("forbidden", "only an admin key may revoke an admin key")
        if record["revoked_at"] is None:
            record["revoked_at"] = clock
        return {"key_id": key_id, "revoked_at": record["revoked_at"]}

    def touch(self, cmd: dict, clock: int) -> dict:
        used = cmd.get("used")
        if not isinstance(used, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in used.values()):
            raise Invalid("used must map key ids to times (ms)")
        touched = 0
        for key_id in sorted(used):
            record = self.keys.get(key_id)
            if record is not None and (record["last_used_at"] or 0) < used[key_id]:
                record["last_used_at"] = used[key_id]
                touched += 1
        return {"touched": touched}

    # ----- reads -----------------------------------------------------------------------------------------------
    def get(self, key_id: str) -> dict | None:
        return self.keys.get(key_id)

    def list(self, owner_id: str | None = None) -> list[dict]:
        return [self.public(r) for r in self.keys.values() if owner_id is None or r["owner_id"] == owner_id]

    # ----- snapshots -------------------------------------------------------------------------------------------
    def snapshot(self) -> list[dict]:
        return list(self.keys.values())

    def restore(self, records: list[dict]) -> None:
        self.keys = {r["key_id"]: dict(r) for r in records}
