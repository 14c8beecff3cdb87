"""Noticing that this node was removed from the cluster (DELETE /cluster/members).

Raft does not tell a removed node: the entry that removes it is no longer sent to it, and the members refuse
its connections. It only stops hearing from the cluster. So while this node is not ready, it asks the members
it knows over HTTP; when one that has a leader lists members without this node, it says so once in its log
and in /cluster (`removed_from_cluster`), so that the operator stops it. A node with an empty log was never a
member: it is waiting to be added (`not_yet_a_member`, logged at INFO); so is one the leader is catching up
before adding it (the leader's /cluster names it in `catching_up`). Reporting only: Raft on this node is
unchanged, and the flag clears when it hears from a leader again (added, or a removal that was undone).
"""
from __future__ import annotations

import asyncio
import logging

import aiohttp
import orjson

from raftqueue.api.context import Context

log = logging.getLogger("raftqueue.api")

CHECK_EVERY_S = 2.0
NOT_READY_FOR_S = 3.0


async def watch(ctx: Context, admin_key: str | None) -> None:
    """Runs for the life of the node."""
    headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
    flags = ctx.extras.setdefault("cluster_flags", {})
    not_ready = 0.0
    while True:
        await asyncio.sleep(CHECK_EVERY_S)
        if ctx.replica.is_ready():
            not_ready = 0.0
            flags.pop("removed_from_cluster", None)
            flags.pop("not_yet_a_member", None)
            continue
        not_ready += CHECK_EVERY_S
        if not_ready < NOT_READY_FOR_S or "removed_from_cluster" in flags or "not_yet_a_member" in flags:
            continue
        seen_by = await _listed_without_me(ctx, headers)
        if seen_by is None:
            continue
        node = ctx.replica.node
        if seen_by.get("catching_up"):  # the leader is sending it the log, to add it once it has caught up
            flags["not_yet_a_member"] = seen_by
            log.info("this node (%s) is catching up with the log; %s adds it to the cluster once it has",
                     ctx.settings.node_id, seen_by["by"])
        elif node is not None and node.snapshot_index == 0 and node.last_log_index <= 1:
            flags["not_yet_a_member"] = seen_by
            log.info("this node (%s) is not a member of the cluster yet (%s's members are %s): add it with "
                     "POST /cluster/members or `raftqueue cluster add`", ctx.settings.node_id, seen_by["by"],
                     ", ".join(seen_by["members"]))
        else:
            flags["removed_from_cluster"] = seen_by
            log.error("this node (%s) is not a member any more: %s's members are %s (it was removed, or an add "
                      "of it gave up catching up). It takes no part in the cluster; stop it, and wipe its data "
                      "directory before it ever rejoins", ctx.settings.node_id, seen_by["by"],
                      ", ".join(seen_by["members"]))


async def _listed_without_me(ctx: Context, headers: dict) -> dict | None:
    me = ctx.settings.node_id
    for member in ctx.replica.members:
        if member.id == me:
            continue
        try:
            async with ctx.peer_session.get(f"{member.http_addr}/cluster", params={"digest": "0"}, headers=headers,
                                            timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status != 200:
                    continue
                status = orjson.loads(await resp.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, orjson.JSONDecodeError):
            continue
        ids = [m.get("id") for m in status.get("members", []) if isinstance(m, dict)]
        if status.get("ready") and status.get("leader") and me not in ids:
            learner = status.get("catching_up")
            return {"by": str(status.get("node_id")), "members": [str(i) for i in ids],
                    "catching_up": isinstance(learner, dict) and learner.get("id") == me}
    return None
