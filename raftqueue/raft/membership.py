"""Run-time membership: the log entry that adds or removes one member, and the member list it changes.

A member is `{"id", "raft_addr", "http_addr"}`: every node must know the others' HTTP addresses (to forward
to the leader, for /cluster), so the whole description travels in the log, not only the Raft address the
library keys nodes by. The entry is the library's MEMBERSHIP command type with a JSON body of ours; the
library's own body is a pickled Node, and nothing read from the log is unpickled here.

Raft (thesis §4.1) takes a member list from an entry as soon as the entry is in the log, committed or not;
a truncated entry's change is undone. So a node keeps two lists: the latest in its log (who votes and who
gets entries) and the one as of its applied index (what a snapshot at that index records).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import orjson

MEMBERSHIP = 2  # pysyncobj.syncobj._COMMAND_TYPE.MEMBERSHIP
ADD, REMOVE = "add", "rem"  # the library's names for the two kinds of change

Members = Mapping[str, dict]  # raft_addr -> {"id", "raft_addr", "http_addr"}


class BadChange(ValueError):
    """A membership entry this build cannot read."""


def spec(member_id: str, raft_addr: str, http_addr: str) -> dict:
    return {"id": member_id, "raft_addr": raft_addr, "http_addr": http_addr}


def encode_change(op: str, member: dict) -> bytes:
    """The entry's body (the library puts the command-type byte in front)."""
    if op not in (ADD, REMOVE):
        raise ValueError(f"unknown membership change {op!r}")
    return orjson.dumps({"op": op, "member": spec(member["id"], member["raft_addr"], member["http_addr"])})


def decode_change(command: bytes) -> tuple[str, dict] | None:
    """(op, member) of a MEMBERSHIP entry (type byte included); None for any other entry."""
    if not command or command[0] != MEMBERSHIP:
        return None
    try:
        raw = orjson.loads(command[1:])
        op, member = raw["op"], raw["member"]
        out = spec(str(member["id"]), str(member["raft_addr"]), str(member["http_addr"]))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise BadChange(f"unreadable membership entry ({type(exc).__name__})") from None
    if op not in (ADD, REMOVE):
        raise BadChange(f"unknown membership change {op!r}")
    return op, out


def changed(members: Members, op: str, member: dict, reverse: bool = False) -> dict[str, dict]:
    """The member list after (or, with `reverse`, before) one change; the input is not modified."""
    out = dict(members)
    if (op == ADD) != reverse:
        out[member["raft_addr"]] = member
    else:
        out.pop(member["raft_addr"], None)
    return out


def replay(members: Members, commands: Iterable[bytes]) -> dict[str, dict]:
    """The member list after the MEMBERSHIP entries among `commands`, in log order (unreadable ones skipped)."""
    out = dict(members)
    for command in commands:
        try:
            change = decode_change(command)
        except BadChange:
            continue
        if change is not None:
            out = changed(out, *change)
    return out


def as_list(members: Members) -> list[dict]:
    """Sorted by id, for snapshots and answers."""
    return sorted(members.values(), key=lambda m: (m["id"], m["raft_addr"]))


def by_addr(members: Iterable[dict]) -> dict[str, dict]:
    return {m["raft_addr"]: spec(m["id"], m["raft_addr"], m["http_addr"]) for m in members}
