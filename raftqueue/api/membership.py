"""POST /cluster/members and DELETE /cluster/members/{id}: add or remove one node at run time.

Each is one Raft membership entry, proposed by the leader (a follower passes the request on whole), one at a
time: a change asked while another is not yet applied is answered 409 and changes nothing. The member list
lives in the log and in snapshots, so it survives restarts and reaches nodes that were down (raft/membership).

Adding: start the new node first (same cluster secret and admin key, an empty data directory, `--peer` for
every current member and itself), then add it. The leader sends it a snapshot and the log first, without
counting it toward a majority, and adds it once it has caught up (RaftNode.change_members). Removing the
leader: it hands over to its most caught-up follower first, and the new leader removes it.
"""
from __future__ import annotations

import asyncio
import re
import time
from urllib.parse import urlsplit

import aiohttp
import orjson
from aiohttp import web

from raftqueue.api.appkeys import CTX
from raftqueue.api.batch_forward import LeaderRetry
from raftqueue.api.errors import ApiError, invalid
from raftqueue.api.forward import ForwardBroken, ForwardNotSent
from raftqueue.api.validation import obj, parse_json, reject_unknown
from raftqueue.config import ConfigError, split_hostport
from raftqueue.raft.errors import (CatchUpEnded, ChangeRefused, CommitUnknown, NoLeader, NotCommitted, NotLeader,
                                   ProposalError, ReplicaClosed)
from raftqueue.replica import Member, is_loopback

routes = web.RouteTableDef()

MEMBER_FIELDS = {"id", "raft_addr", "http_addr"}
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HANDOVER_WAIT_S = 5.0
# How long a catch-up (the new node receiving the log without a vote) may go without any progress before the
# leader gives up on it. How long the add's request waits for it is --catch-up-wait (Settings.catch_up_wait_s).
CATCH_UP_IDLE_S = 20.0
MAX_CATCH_UP_WAIT_S = 600.0  # the most --catch-up-wait allows


def parse_member(body: bytes, secret: bool) -> Member:
    """A member from `{"id", "raft_addr", "http_addr"}`, or a 400 naming the field."""
    raw = obj(parse_json(body))
    reject_unknown(raw, MEMBER_FIELDS)
    for name in sorted(MEMBER_FIELDS):
        if not isinstance(raw.get(name), str) or not raw[name]:
            raise invalid(name, "required, a non-empty string")
    if not _ID.fullmatch(raw["id"]):
        raise invalid("id", "letters, digits, '_', '.' or '-', at most 64, starting with a letter or digit")
    raft_addr = raw["raft_addr"].strip()
    try:
        split_hostport(raft_addr, "raft_addr")
    except ConfigError as exc:
        raise invalid("raft_addr", f"{str(exc).split(': ', 1)[-1]} (e.g. 10.0.0.4:9084)") from None
    if not secret and not is_loopback(raft_addr):
        raise invalid("raft_addr", "this cluster runs without a cluster secret (--insecure-raft), which allows "
                                   "loopback members only")
    http_addr = raw["http_addr"].strip().rstrip("/")
    parts = urlsplit(http_addr)
    try:
        port = parts.port
    except ValueError:
        port = None
    if (parts.scheme not in ("http", "https") or not parts.hostname or port is None or "@" in parts.netloc
            or http_addr != f"{parts.scheme}://{parts.netloc}"):  # nodes append paths to it: nothing else may follow
        raise invalid("http_addr", "must be http://host:port or https://host:port (e.g. http://10.0.0.4:8084)")
    return Member(raw["id"], raft_addr, http_addr)


def _answer(status: int, index: int, node_id: str, body: dict) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json",
                        headers={"X-Raft-Index": str(index), "X-Raft-Leader": node_id})


def _members_body(members: list[Member]) -> list[dict]:
    return [{"id": m.id, "raft_addr": m.raft_addr, "http_addr": m.http_addr} for m in members]


def _added(ctx, member: Member, status: int = 200, index: int | None = None, **extra) -> web.Response:
    return _answer(status, ctx.replica.applied_index if index is None else index, ctx.settings.node_id,
                   {"member": _members_body([member])[0], "members": _members_body(ctx.replica.members), **extra})


def _catching_up(ctx, member: Member) -> web.Response | None:
    """202 while the leader still brings `member` up to date before adding it; None if it does not."""
    learner = ctx.replica.catching_up()
    if learner is None or learner["id"] != member.id or learner["raft_addr"] != member.raft_addr:
        return None
    return _added(ctx, member, 202, catching_up=learner)


def _removed(ctx, member_id: str, index: int | None = None, **extra) -> web.Response:
    return _answer(200, ctx.replica.applied_index if index is None else index, ctx.settings.node_id,
                   {"removed": member_id, "members": _members_body(ctx.replica.members), **extra})


async def _change(request: web.Request, op: str, member: Member) -> int | None:
    """Propose one change here as leader: its index, or None when this node is no longer the leader."""
    ctx = request.app[CTX]
    deadline = time.monotonic() + ctx.settings.propose_timeout_s
    while True:
        try:
            return await ctx.replica.change_members(op, member, timeout=ctx.settings.propose_timeout_s,
                                                    catch_up_wait_s=ctx.settings.catch_up_wait_s,
                                                    catch_up_idle_s=CATCH_UP_IDLE_S)
        except (NotLeader, NoLeader, NotCommitted):
            return None
        except CatchUpEnded as exc:  # cancelled, or no progress for CATCH_UP_IDLE_S: asking again would start over
            raise ApiError(409, "conflict", str(exc)) from None
        except ChangeRefused as exc:
            # Another change is being applied, or this leader is new (after a hand-over, the forwarded request
            # arrives first): both pass in moments.
            if time.monotonic() >= deadline:
                raise ApiError(409, "conflict", str(exc), {"Retry-After": "1"}) from None
        except CommitUnknown as exc:
            raise ApiError(504, "commit_timeout", f"{exc}; GET /cluster shows whether it was") from None
        except ReplicaClosed:
            raise ApiError(503, "no_leader", "this node is shutting down", {"Retry-After": "1"}) from None
        if not ctx.replica.is_leader:
            return None
        await asyncio.sleep(0.05)


@routes.post("/cluster/members")
async def add_member(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    body = await ctx.body(request, limit=16 * 1024)
    member = parse_member(body, bool(ctx.replica.config.secret))

    async def here() -> web.Response | None:
        still = _catching_up(ctx, member)
        if still is not None:  # a repeat while the first one catches up: how far it is
            return still
        members = ctx.replica.members
        for current in members:
            if current == member:  # a repeat: the same answer once the first one is committed, nothing new
                if not await _settles(ctx, lambda: member in ctx.replica.applied_members()):
                    raise ApiError(409, "conflict", f"adding {member.id} is not committed yet; retry",
                                   {"Retry-After": "1"})
                return _added(ctx, member)
            if current.id == member.id:
                raise ApiError(409, "conflict", f"{member.id} is already a member (raft {current.raft_addr}, "
                                                f"http {current.http_addr}); remove it first to change its addresses")
            if current.raft_addr == member.raft_addr:
                raise ApiError(409, "conflict", f"raft_addr {member.raft_addr} belongs to member {current.id}")
        await _check_quorum_after(ctx, [*members, member], new=member)
        index = await _change(request, "add", member)
        if index is None:
            return None
        return _added(ctx, member, 201, index)

    try:
        # the leader's --catch-up-wait may be longer than this node's: wait as long as it may take
        return await ctx.on_leader(request, body, here, _alone(request, body, MAX_CATCH_UP_WAIT_S))
    except ApiError as exc:
        still = _catching_up(ctx, member) if exc.status == 504 else None
        if still is not None:  # --catch-up-wait passed and it still makes progress: the leader adds it later
            return still
        if exc.status != 504 or not await _settles(ctx, lambda: member in ctx.replica.applied_members()):
            raise
        return _added(ctx, member)


@routes.delete("/cluster/members/{member_id}")
async def remove_member(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    member_id = request.match_info["member_id"]
    await ctx.body(request, limit=16 * 1024)  # any body is read and ignored

    def gone() -> bool:
        return all(m.id != member_id for m in ctx.replica.applied_members())

    async def here() -> web.Response | None:
        learner = ctx.replica.catching_up()
        if learner is not None and learner["id"] == member_id:
            # an add still catching up: give it up (it may never catch up, and it holds the one change)
            cancelled = await _cancel_catch_up(ctx, member_id)
            if cancelled is None:
                return None
            if cancelled:
                return _removed(ctx, member_id, was_catching_up=True)
        members = ctx.replica.members
        member = next((m for m in members if m.id == member_id), None)
        if member is None:
            if any(m.id == member_id for m in ctx.replica.applied_members()):  # its removal is not committed yet
                if not await _settles(ctx, gone):
                    raise ApiError(409, "conflict", f"removing {member_id} is not committed yet; retry",
                                   {"Retry-After": "1"})
                return _removed(ctx, member_id)
            raise ApiError(404, "not_found", f"{member_id} is not a member "
                                             f"(members: {', '.join(m.id for m in members)})")
        if len(members) == 1:
            raise ApiError(409, "conflict", f"{member_id} is the only member; a cluster cannot remove its last node")
        await _check_quorum_after(ctx, [m for m in members if m.id != member_id])
        if member.id == ctx.settings.node_id:
            return await _hand_over(request)  # the new leader removes this node
        index = await _change(request, "rem", member)
        if index is None:
            return None
        return _removed(ctx, member_id, index)

    try:
        return await ctx.on_leader(request, b"", here, _alone(request, b"", HANDOVER_WAIT_S))
    except ApiError as exc:
        if exc.status != 504 or not await _settles(ctx, gone):
            raise
        return _removed(ctx, member_id)


async def _cancel_catch_up(ctx, member_id: str) -> bool | None:
    """True once cancelled; False if it was added or given up on meanwhile; None if this node lost leadership."""
    try:
        await ctx.replica.cancel_catch_up(member_id, timeout=ctx.settings.propose_timeout_s)
    except (NotLeader, NoLeader):
        return None
    except ChangeRefused:
        return False
    except CommitUnknown as exc:
        raise ApiError(504, "commit_timeout", f"{exc}; GET /cluster shows whether it is still catching up") from None
    return True


def _alone(request: web.Request, body: bytes, may_take_s: float):
    """Pass the request to the leader in an exchange of its own: it may take seconds (a catch-up, a hand-over),
    and the requests batched with it would wait as long for their answers."""
    ctx = request.app[CTX]
    timeout_s = may_take_s + 2 * ctx.settings.propose_timeout_s + 5.0  # + the quorum check and the commit

    def there(leader: Member):
        return ctx.batcher.forward_alone(request, body, leader, timeout_s)
    return there


async def _check_quorum_after(ctx, members: list[Member], new: Member | None = None) -> None:
    """Refuse a change after which the members that are up would not be a majority: the cluster would stop
    taking writes at once, and undoing the change would need that majority too. A new member must answer."""
    up = ctx.replica.members_up()
    if new is not None:
        if not await _answers(ctx, new.http_addr):
            raise ApiError(409, "conflict", f"{new.id} does not answer at {new.http_addr}/live: start it first "
                                            "(a member that is down counts against the majority)")
        up.add(new.id)
    count = sum(1 for m in members if m.id in up)
    needed = len(members) // 2 + 1
    if count < needed:
        down = ", ".join(m.id for m in members if m.id not in up)
        raise ApiError(409, "conflict", f"after this change {count} of {len(members)} members would be up (down or "
                                        f"not answering: {down}), and the cluster needs {needed}: bring them back "
                                        "first", {"Retry-After": "1"})


async def _answers(ctx, http_addr: str) -> bool:
    try:
        async with ctx.peer_session.get(f"{http_addr}/live", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
        return False


async def _settles(ctx, done) -> bool:
    """After an unknown outcome (the leader changed mid-request, as it does when the leader itself is removed):
    wait until this node has applied the change, i.e. it is committed."""
    deadline = time.monotonic() + ctx.settings.propose_timeout_s
    while time.monotonic() < deadline:
        if done():
            return True
        await asyncio.sleep(0.05)
    return False


async def _hand_over(request: web.Request) -> web.Response | None:
    """This leader is to be removed: ask its most caught-up follower to take over, wait until it has, and pass
    the request to it (also when this request was itself passed on by a follower: it cannot loop, the new
    leader is another node). None: try again."""
    ctx = request.app[CTX]
    replica = ctx.replica
    deadline = time.monotonic() + HANDOVER_WAIT_S
    while replica.is_leader and time.monotonic() < deadline:
        try:
            await replica.transfer_leadership(timeout=3.0)
        except ProposalError:
            pass  # no follower is caught up yet (or the answer was lost): ask again
        step_end = min(deadline, time.monotonic() + 1.0)
        while replica.is_leader and time.monotonic() < step_end:
            await asyncio.sleep(0.02)
    if replica.is_leader:
        raise ApiError(409, "conflict", f"{ctx.settings.node_id} is the leader and no follower was caught up to take "
                                        "over; retry when the others are up", {"Retry-After": "1"})
    while time.monotonic() < deadline + HANDOVER_WAIT_S:
        leader = replica.leader
        if leader is not None and leader.id != ctx.settings.node_id:
            try:
                return await _alone(request, b"", 0.0)(leader)
            except (ForwardNotSent, LeaderRetry):
                return None
            except ForwardBroken as exc:
                raise ApiError(504, "commit_timeout", f"the new leader stopped answering ({exc}); GET /cluster "
                                                      "shows whether the member was removed") from None
        if replica.is_leader:
            return None
        await asyncio.sleep(0.02)
    raise ApiError(503, "no_leader", "leadership was handed over and no new leader is known yet; retry",
                   {"Retry-After": "1"})
