"""The replica: the job store on a hardened PySyncObj, as the asyncio HTTP layer uses it.

    replica = Replica(config)
    await replica.start()
    index, results = await replica.propose([{"kind": "submit", ...}], timeout=5.0)
    with replica.reading() as store: store.get(job_id)
    await replica.wait_applied(index, timeout=1.0)      # read-your-writes on any node
    await replica.status()                              # for /cluster

Only this module and `raftqueue.raft` know PySyncObj. Proposals are stamped here (leader time, ids, token
entropy), encoded with orjson, and gathered by the node's tick thread into one log entry per tick (group
commit). Results come back through `loop.call_soon_threadsafe`. A timeout raises `CommitUnknown`: the entry
may still commit, so callers retry only with idempotency keys.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import orjson

from raftqueue.clock import Clock
from raftqueue.ids import IdGenerator
from raftqueue.raft.errors import (CommitUnknown, NoLeader, NotLeader, ProposalError,  # noqa: F401 (re-export)
                                   ReplicaClosed)
from raftqueue.raft.node import Proposal, RaftNode, RaftSettings
from raftqueue.replicated_store import ReplicatedStore
from raftqueue.stamping import stamp

log = logging.getLogger("raftqueue.replica")

ApplyListener = Callable[[int, list], None]


@dataclass(frozen=True)
class Member:
    id: str
    raft_addr: str   # host:port of the Raft transport
    http_addr: str   # base URL of the HTTP API, e.g. http://127.0.0.1:8081


def is_loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0].strip("[]")
    return host in ("localhost", "::1") or host.startswith("127.")


class InsecureRaftRefused(RuntimeError):
    """A cluster without a secret whose addresses are not all loopback (or without --insecure-raft)."""


@dataclass
class ReplicaConfig:
    node_id: str
    members: list[Member]
    data_dir: Path
    secret: str | None = None
    insecure_raft: bool = False
    raft_bind: str | None = None
    fsync: bool = True
    retention_ms: int = 24 * 3600 * 1000
    raft: dict = field(default_factory=dict)   # RaftSettings overrides (timeouts, group sizes, compaction)

    @property
    def self_member(self) -> Member:
        for member in self.members:
            if member.id == self.node_id:
                return member
        raise ValueError(f"node id {self.node_id!r} is not among the members")

    def check_transport_security(self) -> None:
        """A cluster secret is required unless every address is loopback and insecure mode was asked for."""
        if self.secret:
            return
        addrs = [m.raft_addr for m in self.members] + ([self.raft_bind] if self.raft_bind else [])
        if self.insecure_raft and all(is_loopback(a) for a in addrs):
            return
        if self.insecure_raft:
            raise InsecureRaftRefused("--insecure-raft is allowed only when every Raft address is loopback; "
                                      "set a cluster secret (RAFTQUEUE_CLUSTER_SECRET)")
        raise InsecureRaftRefused("a cluster secret is required (RAFTQUEUE_CLUSTER_SECRET or --cluster-secret); "
                                  "for a loopback-only dev cluster, --insecure-raft")


class Replica:
    def __init__(self, config: ReplicaConfig, clock: Clock | None = None, store_cls: type | None = None) -> None:
        config.check_transport_security()
        self.config = config
        self.clock = clock or Clock()
        self.ids = IdGenerator()
        self.state = ReplicatedStore(self.clock, config.retention_ms, store_cls)
        self.node: RaftNode | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_raft_addr = {m.raft_addr: m for m in config.members}
        self._members: list[Member] = sorted(config.members, key=lambda m: m.id)  # see _members_changed
        self._applied = 0
        self._applied_queue: collections.deque = collections.deque()
        self._drain_scheduled = False
        self._waiters: list[tuple[int, int, asyncio.Future]] = []
        self.on_committed: Callable[[float], None] | None = None  # /metrics: proposal latency in seconds
        self._waiter_seq = itertools.count()
        self._listeners: list[ApplyListener] = []
        self._restore_listeners: list[Callable[[int], None]] = []
        self._role_listeners: list[Callable[[str], None]] = []
        self._completions: collections.deque = collections.deque()
        self._completions_scheduled = False
        self._closed = False

    # ----- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.state.on_applied = self._applied_from_tick
        self.state.on_restored = self._restored_from_tick
        me = self.config.self_member
        settings = RaftSettings(
            self_addr=me.raft_addr,
            peer_addrs=[m.raft_addr for m in self.config.members if m.id != me.id],
            data_dir=Path(self.config.data_dir),
            password=self.config.secret or None,
            bind_addr=self.config.raft_bind,
            fsync=self.config.fsync,
            members=[{"id": m.id, "raft_addr": m.raft_addr, "http_addr": m.http_addr} for m in self.config.members],
        )
        for key, value in self.config.raft.items():
            if not hasattr(settings, key):
                raise ValueError(f"unknown raft setting {key!r}")
            setattr(settings, key, value)
        # Binding and loading the snapshot and log may take a while: keep the event loop free meanwhile.
        self.node = await self._loop.run_in_executor(None, RaftNode, settings, self.state)
        self.node.on_role_change = self._role_from_tick
        self._members_changed(self.node.member_list)
        self.node.on_members_change = self._members_changed
        self._applied = max(self.state.state_index, self.node.applied_index)
        self.node.start()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.node is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.node.stop)
        for _, _, fut in self._waiters:
            if not fut.done():
                fut.set_result(False)
        self._waiters.clear()

    # ----- writes -------------------------------------------------------------------------------------------
    async def propose(self, commands: list[dict], timeout: float = 5.0) -> tuple[int, list[dict]]:
        """Stamp, replicate and apply `commands` as part of one log entry; return (raft index, results)."""
        node = self._require_node()
        if not node.is_leader:
            leader = node.leader_addr
            if leader is None:
                raise NoLeader("no leader is known (an election is in progress)")
            raise NotLeader(leader, "this node is not the leader")
        now = self.clock.now_ms()
        encoded = [orjson.dumps(stamp(command, now, self.ids)) for command in commands]
        loop = self._loop
        assert loop is not None
        future: asyncio.Future = loop.create_future()

        def done(index, results, error) -> None:  # on the tick thread
            self._completions.append((future, index, results, error))
            if not self._completions_scheduled:
                self._completions_scheduled = True
                loop.call_soon_threadsafe(self._settle_completions)

        node.submit(Proposal(encoded, done))
        started = time.perf_counter()
        # One timer on our own future instead of wait_for(shield(...)), which makes two more futures and a
        # task's worth of callbacks per proposal. A result that arrives after the timeout is dropped (_settle).
        expiry = loop.call_later(timeout, _expire, future, timeout)
        try:
            answer = await future
        finally:
            expiry.cancel()
        if self.on_committed is not None:
            self.on_committed(time.perf_counter() - started)
        return answer

    async def barrier(self, timeout: float = 5.0) -> int:
        """Commit a no-op through this node as leader: afterwards its state includes every earlier commit."""
        index, _ = await self.propose([{"kind": "noop"}], timeout)
        return index

    # ----- reads --------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def reading(self) -> Iterator["JobStore"]:  # noqa: F821
        """Hold the store still (no apply runs meanwhile) and read it. Keep the block short."""
        with self.state.lock:
            yield self.state.store

    @property
    def applied_index(self) -> int:
        node = self.node
        return max(self._applied, node.applied_index if node is not None else 0)

    @property
    def known_commit_index(self) -> int:
        """The highest index this node knows the cluster has committed (the leader's, from its last append)."""
        node = self.node
        if node is None:
            return self.applied_index
        return max(node.commit_index, node.leader_commit_index or 0, self.applied_index)

    async def wait_applied(self, index: int, timeout: float) -> bool:
        """Wait until this node has applied `index` (True) or the timeout passes (False)."""
        if self.applied_index >= index:
            return True
        loop = self._loop
        assert loop is not None
        future: asyncio.Future = loop.create_future()
        if len(self._waiters) > 4096:  # drop abandoned waiters now and then
            self._waiters = [w for w in self._waiters if not w[2].done()]
            heapq.heapify(self._waiters)
        heapq.heappush(self._waiters, (index, next(self._waiter_seq), future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except asyncio.TimeoutError:
            future.cancel()
            return self.applied_index >= index

    def add_listener(self, listener: ApplyListener) -> None:
        """`listener(index, events)` on the event loop after each applied entry (events: store event tuples)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: ApplyListener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def add_restore_listener(self, listener: Callable[[int], None]) -> None:
        """Called when the whole state was replaced by a snapshot from the leader."""
        self._restore_listeners.append(listener)

    def add_role_listener(self, listener: Callable[[str], None]) -> None:
        """`listener(role)` on the event loop whenever this node's Raft role changes."""
        self._role_listeners.append(listener)

    # ----- membership ---------------------------------------------------------------------------------------
    def _members_changed(self, members: list[dict]) -> None:
        """On the tick thread, whenever the member list in this node's log changes (one dict replaced whole)."""
        by_addr = {m["raft_addr"]: Member(m["id"], m["raft_addr"], m["http_addr"]) for m in members}
        if self.config.self_member.raft_addr not in by_addr:
            # this node was removed, or is joining and not added yet: it still names itself for /cluster
            me = self.config.self_member
            by_addr_all = {**by_addr, me.raft_addr: me}
        else:
            by_addr_all = by_addr
        self._members = [by_addr[a] for a in by_addr]
        self._by_raft_addr = by_addr_all

    @property
    def members(self) -> list[Member]:
        """The members in this node's log, latest change included (sorted by id)."""
        return list(self._members)

    def applied_members(self) -> list[Member]:
        """The members as of this node's applied index: every change in it is committed."""
        return [Member(m["id"], m["raft_addr"], m["http_addr"]) for m in self._require_node().applied_member_list]

    def members_up(self) -> set[str]:
        """On the leader: the ids of the members that answered it lately, itself included."""
        node = self._require_node()
        answered = node.responsive_peers() | {self.config.self_member.raft_addr}
        return {m.id for m in self._members if m.raft_addr in answered}

    async def change_members(self, op: str, member: Member, timeout: float = 5.0, catch_up_wait_s: float = 20.0,
                             catch_up_idle_s: float = 20.0) -> int:
        """Add ("add") or remove ("rem") one member through this node as leader; the index it applied at. A node
        to add first catches up with the log, until `catch_up_idle_s` pass without progress
        (RaftNode.change_members); this waits for `catch_up_wait_s` of that, then raises CommitUnknown while it
        goes on (see `catching_up`)."""
        spec = {"id": member.id, "raft_addr": member.raft_addr, "http_addr": member.http_addr}
        node = self._require_node()
        return await self._on_tick(lambda done: node.change_members(op, spec, done, catch_up_idle_s),
                                   timeout + (catch_up_wait_s if op == "add" else 0.0))

    async def cancel_catch_up(self, member_id: str, timeout: float = 5.0) -> None:
        """Stop catching up a node to add (this node as leader); ChangeRefused if it is not being caught up."""
        node = self._require_node()
        await self._on_tick(lambda done: node.cancel_catch_up(member_id, done), timeout)

    async def transfer_leadership(self, timeout: float = 5.0) -> None:
        """Ask the most caught-up follower to take over; returns once the request went out."""
        await self._on_tick(self._require_node().transfer_leadership, timeout)

    async def _on_tick(self, start: Callable[[Callable], None], timeout: float):
        loop = self._loop
        assert loop is not None
        future: asyncio.Future = loop.create_future()

        def done(index, error) -> None:  # on the tick thread
            loop.call_soon_threadsafe(_settle_one, future, index, error)

        start(done)
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            raise CommitUnknown(f"no answer within {timeout:.0f} s; the change may still be applied") from None

    # ----- cluster view -------------------------------------------------------------------------------------
    def catching_up(self) -> dict | None:
        """On the leader: the node being caught up before its add, with its progress (RaftNode.catching_up)."""
        node = self.node
        return node.catching_up() if node is not None else None

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.node.is_leader

    @property
    def leader(self) -> Member | None:
        node = self.node
        if node is None:
            return None
        addr = node.leader_addr
        return self._by_raft_addr.get(addr) if addr is not None else None

    @property
    def role(self) -> str:
        return self.node.role if self.node is not None else "starting"

    def is_ready(self) -> bool:
        return self.node is not None and self.node.is_ready()

    async def status(self, with_digest: bool = True) -> dict:
        node = self._require_node()
        leader = self.leader
        raft_view = {entry["raft_addr"]: entry for entry in node.members()}
        members = []
        for member in self.members:
            entry = raft_view.get(member.raft_addr, {"self": member.id == self.config.node_id, "connected": False,
                                                     "match_index": None})
            role = node.role if entry["self"] else ("leader" if leader and member.id == leader.id else "follower")
            members.append({"id": member.id, "raft_addr": member.raft_addr, "http_addr": member.http_addr,
                            "role": role, "connected": entry["connected"], "match_index": entry["match_index"]})
        out = {
            "node_id": self.config.node_id,
            "pid": os.getpid(),
            "role": node.role,
            "leader": leader.id if leader else None,
            "term": node.term,
            "commit_index": node.commit_index,
            "applied_index": self.applied_index,
            "last_log_index": node.last_log_index,
            "snapshot_index": node.snapshot_index,
            "ready": node.is_ready(),
            "members": members,
        }
        catching_up = node.catching_up()
        if catching_up is not None:  # a node to add, receiving the log without a vote yet
            out["catching_up"] = catching_up
        if with_digest:
            state_index, digest = await self.state.digest_async()
            out["applied_index"] = max(out["applied_index"], state_index)
            out["state_digest"] = digest
        return out

    def force_compaction(self) -> None:
        self._require_node().force_compaction()

    # ----- plumbing -----------------------------------------------------------------------------------------
    def _require_node(self) -> RaftNode:
        if self.node is None or self._closed:
            raise ReplicaClosed("the replica is not running")
        return self.node

    def _settle_completions(self) -> None:
        self._completions_scheduled = False
        queue = self._completions
        while queue:
            _settle(*queue.popleft())

    def _applied_from_tick(self, index: int, events: list) -> None:
        self._applied_queue.append((index, events))
        if not self._drain_scheduled and self._loop is not None:
            self._drain_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._drain_applied)
            except RuntimeError:  # loop closed during shutdown
                pass

    def _role_from_tick(self, role: str) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._role_changed, role)
        except RuntimeError:
            pass

    def _role_changed(self, role: str) -> None:
        for listener in list(self._role_listeners):
            try:
                listener(role)
            except Exception:
                log.exception("role listener failed")

    def _restored_from_tick(self, index: int) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(self._restored, index)
        except RuntimeError:
            pass

    def _restored(self, index: int) -> None:
        self._applied = max(self._applied, index)
        for listener in list(self._restore_listeners):
            try:
                listener(index)
            except Exception:
                log.exception("restore listener failed")
        self._wake_waiters()

    def _drain_applied(self) -> None:
        self._drain_scheduled = False
        queue = self._applied_queue
        while queue:
            index, events = queue.popleft()
            self._applied = max(self._applied, index)
            for listener in self._listeners:
                try:
                    listener(index, events)
                except Exception:
                    log.exception("apply listener failed")
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        applied = self.applied_index
        waiters = self._waiters
        while waiters and waiters[0][0] <= applied:
            _, _, future = heapq.heappop(waiters)
            if not future.done():
                future.set_result(True)


def _expire(future: asyncio.Future, timeout: float) -> None:
    if not future.done():
        future.set_exception(CommitUnknown(f"not committed within {timeout:.1f} s; it may still commit"))


def _settle(future: asyncio.Future, index, results, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result((index, results))


def _settle_one(future: asyncio.Future, value, error) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)
