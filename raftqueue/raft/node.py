"""RaftNode: PySyncObj's SyncObj, hardened for a job queue that must not lose acknowledged writes.

We subclass and override; the library is never copied or patched. Each override names the defect it fixes
(numbers refer to ../shared/PYSYNCOBJ-NOTES.md and the tests in tests/integration/test_raft_*.py):

D1 journal never fsync'ed; compaction forks a child that renames a dump while the journal is untrimmed, and a
   restart then clears the whole journal.  -> `DurableJournal` and our own snapshots (`_SyncObj__tryLogCompaction`
   override, `snapshot_file`), swapped in before the first tick. The library's compaction never runs.
D2 a follower deletes every entry after prevLogIdx whenever it holds more, not only on a term conflict
   (Raft §5.3), truncating applied and acknowledged entries under pipelined load.  -> `_on_append_entries`.
D3 no fsync before acknowledging.  -> `_SyncObj__sendNextNodeIdx` defers success replies until one fdatasync
   after the tick; the leader fsyncs its own new entries before the commit count that includes itself.
D4 no pre-vote: a restarted or cut-off node bumps the term and deposes a healthy leader.  -> `_maybe_prevote`.
D5 one write at a time waits for the next append period (~100 ms).  -> appendEntriesUseBatch=False plus our own
   tick loop woken by a pipe, and group commit: concurrent proposals share one entry (`_flush_pending`).
D6 `commandsWaitLeader` queues commands for ever while there is no leader.  -> off; proposals fail fast.
D7 install-snapshot throws away log entries newer than the snapshot.  -> `_install_snapshot` keeps the log
   when it already holds the snapshot's last entry (Raft §7).
D8 a timed-out proposal is not cancelled and may commit later.  -> callers get "outcome unknown" and retry with
   idempotency keys; a proposal is never re-sent by us.
D9 a membership entry is a pickled Node, and the members live only in the library's fork-and-pickle dump.
   -> our own entry body (`membership`), members in our snapshot header, and the latest list recomputed from
   snapshot and log at start (`_SyncObj__doChangeCluster`, `_SyncObj__doApplyCommand` overrides).

Threads: PySyncObj runs on our tick thread (`_run`). The store is mutated only there (inside `apply_batch`);
readers on other threads take the state machine's lock. Proposals cross over through a deque and a pipe.
"""
from __future__ import annotations

import collections
import functools
import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from pysyncobj import SyncObj, SyncObjConf, replicated
from pysyncobj.config import FAIL_REASON
from pysyncobj.monotonic import monotonic as monotonic_time

from raftqueue import gctune
from raftqueue.raft import membership
from raftqueue.raft.errors import (EXIT_CANNOT_APPLY, CannotApply, CatchUpEnded, ChangeRefused, CommitUnknown,
                                   NoLeader, NotCommitted, NotLeader, Overloaded, ProposalError, ReplicaClosed)
from raftqueue.raft.files import fsync_dir
from raftqueue.raft.journal import DurableJournal
from raftqueue.raft.snapshot_file import (CorruptSnapshot, SnapshotHeader, read_snapshot, read_snapshot_header,
                                          write_snapshot)
from raftqueue.raft.transfer import SnapshotTransfer
from raftqueue.forked import prepare_child
from raftqueue.raft.frame_cipher import FrameCipher
from raftqueue.raft.transport import HardenedTransport

log = logging.getLogger("raftqueue.raft")
# A tick loop longer than this is logged (at most every 10 s): followers start an election after 0.3-0.6 s
# without heartbeats, and every commit waits for this loop.
SLOW_TICK_S = 0.5

FOLLOWER, CANDIDATE, LEADER = 0, 1, 2  # pysyncobj.syncobj._RAFT_STATE
ROLE_NAMES = {FOLLOWER: "follower", CANDIDATE: "candidate", LEADER: "leader"}


class StateMachine(Protocol):
    """What the node needs from the replicated state (see raftqueue.replicated_store)."""

    def apply_entry(self, blob: bytes, index: int) -> list: ...
    def snapshot_body(self) -> bytes: ...
    def restore_body(self, body: bytes, index: int) -> None: ...
    def housekeeping(self, is_leader: bool) -> list[bytes]: ...


@dataclass
class RaftSettings:
    self_addr: str
    peer_addrs: list[str]
    data_dir: Path
    password: str | None = None
    bind_addr: str | None = None
    fsync: bool = True
    heartbeat_s: float = 0.05
    election_min_s: float = 0.3
    election_max_s: float = 0.6
    connection_retry_s: float = 0.2
    connection_timeout_s: float = 3.5
    leader_fallback_s: float = 1.2
    # A follower whose connection to the leader is still open waits this long without heartbeats before it
    # asks for an election (a stall: the leader's collector, a starved CPU), instead of 0.3-0.6 s. A leader
    # that died closed its connections, so that case fails over as fast as before. Below leader_fallback_s:
    # a leader stalled longer steps down when it resumes, and by then its followers have moved on.
    stall_grace_s: float = 1.0
    tick_wait_s: float = 0.01
    group_max_commands: int = 2048
    group_max_bytes: int = 1024 * 1024
    apply_budget_bytes: int = 1024 * 1024  # log bytes applied per tick (at least one entry): _SyncObj__applyLogEntries
    max_message_bytes: int = 32 * 1024 * 1024
    compact_min_entries: int = 20_000
    snapshot_write_bytes_per_s: float = 64e6  # the snapshot child's write rate (see files.write_paced)
    compact_min_bytes: int = 64 * 1024 * 1024
    compact_growth: float = 0.25  # and the log since holds >= this share of the last snapshot's bytes
    queue_size: int = 100_000
    # The members this node starts with when its snapshot and log say nothing ({"id", "raft_addr",
    # "http_addr"}, itself included); empty: ids are the Raft addresses and HTTP addresses are unknown.
    members: list[dict] = field(default_factory=list)
    members_from_flags: bool = False  # ... even when the snapshot and log record others (restoring a backup)
    extra: dict = field(default_factory=dict)


_MEMBERSHIP_BYTE = bytes((membership.MEMBERSHIP,))
_HELD = float("inf")  # the library's election deadline while our pre-vote holds it back (see _maybe_prevote)

# group-commit entry sizes for /metrics: bucket i counts entries of at most 2**i - 1 commands (plain ints)
GROUP_BUCKETS = tuple(2 ** i - 1 for i in range(13)) + (float("inf"),)


@dataclass
class CatchUp:
    """A node the leader replicates to without counting it (a non-voting learner) until it has caught up.

    Raft thesis §4.2.1: added at once, a node with an empty log is a voter that holds nothing, so a cluster of
    three that adds a fourth needs three of four for every commit while the newcomer receives the snapshot (for
    a big state, many seconds); one more failure then stops all writes. Caught up in rounds instead: a round
    sends what the log held at its start; when one takes less than an election timeout, the node is added. It
    goes on as long as it makes progress (snapshot bytes sent, or entries matched); `idle_s` without any ends
    it unadded."""

    member: dict
    node: object  # the library's node object, in its transport and its set of read-only nodes meanwhile
    on_done: Callable[[int | None, Exception | None], None]
    idle_s: float
    round_target: int
    round_started: float
    progress: tuple = (0, 0)  # (match index, snapshot bytes sent) when it last moved ...
    progressed_at: float = 0.0  # ... and when that was


class Proposal:
    """Encoded commands waiting for one log entry; `on_done(index, results, error)` runs on the tick thread."""

    __slots__ = ("commands", "size", "on_done")

    def __init__(self, commands: list[bytes], on_done: Callable[[int | None, list | None, Exception | None], None]):
        self.commands = commands
        self.size = sum(len(c) for c in commands) + len(commands)
        self.on_done = on_done


def _error_for(reason: int) -> ProposalError:
    if reason == FAIL_REASON.QUEUE_FULL:
        return Overloaded("the Raft command queue is full")
    if reason in (FAIL_REASON.MISSING_LEADER,):
        return NoLeader("no leader")
    if reason == FAIL_REASON.NOT_LEADER:
        return NotLeader(None, "this node is not the leader")
    if reason == FAIL_REASON.DISCARDED:
        return NotCommitted("the entry was replaced by a newer leader's entry")
    if reason == FAIL_REASON.REQUEST_DENIED:
        return NotCommitted("the request was denied")
    return CommitUnknown(f"outcome unknown (raft reason {reason})")


def _describe(members: dict[str, dict]) -> str:
    return ", ".join(f"{m['id']}={m['raft_addr']}" for m in membership.as_list(members))


def _change_done(on_done: Callable[[int | None, Exception | None], None], result, error) -> None:
    if error == FAIL_REASON.SUCCESS:
        on_done(result, None)
    else:
        on_done(None, _error_for(error))


def _transfer_done(on_done: Callable[[int | None, Exception | None], None], result, error) -> None:
    on_done(None, None if error == FAIL_REASON.SUCCESS else _error_for(error))


def _stop_unable_to_apply(exc: CannotApply) -> None:
    """Fail-stop: end the process now, before this replica's state can differ from the others'. The entry
    is durable in the log; a restart with a build that knows its command applies it like any other."""
    log.critical("cannot apply committed %s: this node runs an older build than the one that wrote it. "
                 "It stops here rather than let its state differ from the other replicas. Upgrade this node; "
                 "with the newer build it applies the entry and catches up (exit status %d)",
                 exc, EXIT_CANNOT_APPLY)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_CANNOT_APPLY)


class RaftNode(SyncObj):
    """One Raft member. Create it, call `start()`, propose with `submit()`, and `stop()` at the end."""

    def __init__(self, settings: RaftSettings, state: StateMachine) -> None:
        self._settings = settings
        self._state = state
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        self._snap_dir = data_dir / "snapshots"
        self._snap_dir.mkdir(exist_ok=True)
        self._pending: collections.deque[Proposal] = collections.deque()
        self._wake_pending = False
        self._deferred_acks: list[tuple] = []
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._tick_ident: int | None = None
        self._housekeeping_in_flight = False
        self._last_leader_contact = 0.0
        self._prevote_round = 0
        self._prevote_grants: set = set()
        self._prevote_ok_term: int | None = None  # a majority said it would vote for us in this term + 1 ...
        self._prevote_ok_until = 0.0  # ... until then (monotonic); a leader's append or this deadline voids it
        self._deadline_seen = False  # the election deadline was found passed at the start of a tick already
        self._last_stall_discount = float("-inf")  # when this node last discounted a stall of its own
        self._last_tick_at: float | None = None  # when the previous tick started (time.monotonic) ...
        self._last_tick_wait_s = 0.0  # ... and how long it was allowed to wait for its sockets
        self._compaction_pid = 0
        self._compaction_header: SnapshotHeader | None = None
        self._compaction_retry_at = 0.0
        self._last_slow_tick_log = 0.0
        self._apply_s = 0.0  # time spent applying entries, in total (the slow-tick warning's breakdown)
        self._force_compaction = False
        self._snapshot_size = (-1, 0)  # (snapshot index, bytes of its file), see _last_snapshot_bytes
        self._transmission = b""
        self.on_role_change: Callable[[str], None] | None = None
        self.on_members_change: Callable[[list[dict]], None] | None = None  # called on the tick thread
        self._membership_ops: collections.deque = collections.deque()  # (kind, argument, on_done) from any thread
        self._handover: tuple | None = None  # (deadline, on_done, follower told) while leadership is handed over
        self._change_queued = False  # a membership change was proposed here and its callback has not run yet
        self._catch_up: CatchUp | None = None  # a node being brought up to date before its add (leader only)
        self._transport_extra: set[str] = set()  # committed members the latest list left out (see _sync_transport)
        self._skip_membership_up_to = 0  # --members-from-flags: the old log's changes are not applied
        self._members: dict[str, dict] = {}  # the latest list in the log (see _load_members)
        self._applied_members: dict[str, dict] = {}  # the list as of the applied index
        # Chaos testing only (set through the node's debug routes): Raft peers whose traffic is dropped both
        # ways, as a network partition would. Empty in normal operation.
        self.blocked_peers: frozenset[str] = frozenset()
        # Read by HardenedTransport for every connection it makes, from inside SyncObj.__init__.
        self.frame_cipher = FrameCipher(settings.password) if settings.password else None

        # Load the newest valid snapshot, restore the state from it, and open the log after it.
        snapshot = self._load_newest_snapshot()
        base = snapshot[0].base_entries if snapshot else None
        journal = DurableJournal(data_dir / "raft", base=base, fsync=settings.fsync)
        self._snapshot_index = snapshot[0].index if snapshot else 0
        self._journal = journal  # set before SyncObj.__init__, which evaluates every attribute (dir scan)
        self.group_sizes = [0] * len(GROUP_BUCKETS)
        self.group_commands = 0

        conf = SyncObjConf(
            autoTick=False,
            appendEntriesUseBatch=False,
            appendEntriesPeriod=settings.heartbeat_s,
            raftMinTimeout=settings.election_min_s,
            raftMaxTimeout=settings.election_max_s,
            connectionRetryTime=settings.connection_retry_s,
            connectionTimeout=max(settings.connection_timeout_s, settings.election_max_s),
            leaderFallbackTimeout=settings.leader_fallback_s,
            commandsWaitLeader=False,
            commandsQueueSize=settings.queue_size,
            appendEntriesBatchSizeBytes=settings.max_message_bytes,
            sendBufferSize=2 ** 20,
            recvBufferSize=2 ** 20,
            logCompactionMinEntries=2 ** 62,     # the library never compacts: we do (D1)
            logCompactionMinTime=10 ** 12,
            logCompactionBatchSize=2 ** 20,
            password=settings.password,
            bindAddress=settings.bind_addr or settings.self_addr,
            maxBindRetries=30,
            dnsCacheTime=5.0,          # peers named by DNS (compose service names) may change address
            dnsFailCacheTime=1.0,
            bindRetryTime=0.5,
            onStateChanged=self._on_state_changed,
            dynamicMembershipChange=True,  # D9: entries of our own format, see `membership`
        )
        super().__init__(settings.self_addr, settings.peer_addrs, conf, transportClass=HardenedTransport)

        # Swap our durable journal and snapshot transfer in before the first tick (D1).
        self._SyncObj__raftLog = journal
        self._transfer = SnapshotTransfer(self._newest_snapshot_path, data_dir / "snapshot.incoming",
                                          chunk_bytes=1 << 20, fsync=settings.fsync)
        self._SyncObj__serializer = self._transfer
        last_term = journal[-1][2]
        self._SyncObj__raftCurrentTerm = max(journal.getCurrentTerm(), last_term)
        self._SyncObj__votedForNodeId = journal.getVotedForNodeId()
        last_index = journal[-1][1]
        self._SyncObj__raftLastApplied = max(journal[0][1], self._snapshot_index)
        self._SyncObj__raftCommitIndex = min(max(journal.getRaftCommitIndex(), self._snapshot_index), last_index)
        self._notifier = self._SyncObj__pipeNotifier
        self._load_members(snapshot[0] if snapshot else None)

    # ----- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="raft-tick", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
        self._fail_pending(ReplicaClosed("the node is shutting down"))
        while self._membership_ops:
            self._membership_ops.popleft()[2](None, ReplicaClosed("the node is shutting down"))
        self._abandon_catch_up(ReplicaClosed("the node is shutting down"))
        if self._compaction_pid:
            try:
                os.kill(self._compaction_pid, signal.SIGKILL)
                os.waitpid(self._compaction_pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self._compaction_pid = 0
        self._doDestroy()
        self._transfer.close()

    def _run(self) -> None:
        self._tick_ident = threading.get_ident()
        slow_s = SLOW_TICK_S
        pauses = gctune.PAUSES
        while not self._stop_event.is_set():
            try:
                started, started_cpu = time.monotonic(), time.thread_time()
                applying, collecting = self._apply_s, pauses.total_s
                self._journal.sync()
                synced = time.monotonic()
                backlog = self._SyncObj__raftCommitIndex > self._SyncObj__raftLastApplied
                self._gated_tick(0.0 if backlog else self._settings.tick_wait_s)
                ticked = time.monotonic()
                self._send_deferred_acks()
                self._journal.sync()
                ended = time.monotonic()
                if ended - started > slow_s and ended - self._last_slow_tick_log > 10.0:
                    # Heartbeats and commits wait for this loop: a stall here is a stall of the cluster. The
                    # parts say where to look: the disk, the store, the collector (on any thread), or the rest.
                    self._last_slow_tick_log = ended
                    log.warning("raft tick took %.2f s (fsync %.2f s, tick %.2f s, acks+fsync %.2f s; of it "
                                "applying entries %.2f s, garbage collection %.2f s; this thread ran %.2f s of it)",
                                ended - started, synced - started, ticked - synced, ended - ticked,
                                self._apply_s - applying, pauses.total_s - collecting,
                                time.thread_time() - started_cpu)
            except CannotApply as exc:
                _stop_unable_to_apply(exc)
            except Exception:  # a bug must not kill replication: log it and keep ticking
                log.exception("raft tick failed")
                time.sleep(self._settings.tick_wait_s)

    def _wake(self) -> None:
        try:
            self._notifier.notify()
        except OSError:
            pass

    # ----- proposing ----------------------------------------------------------------------------------------
    def submit(self, proposal: Proposal) -> None:
        """Queue a proposal for the next group-commit entry (any thread)."""
        if self._stop_event.is_set():
            proposal.on_done(None, None, ReplicaClosed("the node is shutting down"))
            return
        if len(self._pending) >= self._settings.queue_size:
            proposal.on_done(None, None, Overloaded("too many proposals waiting"))
            return
        self._pending.append(proposal)
        if not self._wake_pending:  # one pipe write per burst: the tick drains everything queued
            self._wake_pending = True
            self._wake()

    def _checkCommandsToApply(self) -> None:  # runs once per tick, on the tick thread
        self._wake_pending = False
        if self._membership_ops:
            self._run_membership_ops()
        if self._SyncObj__raftState == LEADER:
            self._advance_catch_up()
            if not self._holding_for_handover():
                self._add_housekeeping()
                self._flush_pending()
        elif self._pending:
            leader = self._SyncObj__raftLeader
            self._fail_pending(NotLeader(leader.address if leader is not None else None,
                                         "this node is not the leader"))
        super()._checkCommandsToApply()
        self._journal.sync()  # D3: the leader's own copy is durable before it counts toward a commit

    def _add_housekeeping(self) -> None:
        if self._housekeeping_in_flight:
            return
        commands = self._state.housekeeping(True)
        if commands:
            self._housekeeping_in_flight = True
            self._pending.appendleft(Proposal(commands, self._housekeeping_done))

    def _housekeeping_done(self, index, results, error) -> None:
        self._housekeeping_in_flight = False
        if error is not None and not isinstance(error, (NotLeader, NoLeader, ReplicaClosed)):
            log.debug("housekeeping proposal failed: %s", error)

    def _flush_pending(self) -> None:
        max_cmds, max_bytes = self._settings.group_max_commands, self._settings.group_max_bytes
        while self._pending:
            group: list[Proposal] = []
            count = size = 0
            while self._pending and (not group or (count + len(self._pending[0].commands) <= max_cmds
                                                   and size + self._pending[0].size <= max_bytes)):
                proposal = self._pending.popleft()
                group.append(proposal)
                count += len(proposal.commands)
                size += proposal.size
            blob = b"[" + b",".join(c for p in group for c in p.commands) + b"]"
            self.group_sizes[min(count.bit_length(), len(GROUP_BUCKETS) - 1)] += 1
            self.group_commands += count
            self.apply_batch(blob, callback=functools.partial(self._group_done, group))

    def _applyCommand(self, command, callback, commandType=None):  # noqa: N802,N803 (the library's names)
        """Queue an entry for the library's `_checkCommandsToApply`, which runs right after `_flush_pending`.

        The library also writes its wake-up pipe, for callers on other threads. Our one caller is
        `_flush_pending` on the tick thread, so for every entry that write only bought a poll that returns at
        once, two reads of the pipe and a tick with nothing to do (strace of a leader, 2026-11-27).
        """
        if threading.get_ident() != self._tick_ident:
            return super()._applyCommand(command, callback, commandType)
        if commandType is not None:
            command = bytes((commandType,)) + command
        try:
            self._SyncObj__commandsQueue.put_nowait((command, callback))
        except queue.Full:
            self._SyncObj__callErrCallback(FAIL_REASON.QUEUE_FULL, callback)

    @staticmethod
    def _group_done(group: list[Proposal], result, error) -> None:
        if error == FAIL_REASON.SUCCESS and result is not None:
            index, results = result
            position = 0
            for proposal in group:
                count = len(proposal.commands)
                proposal.on_done(index, results[position:position + count], None)
                position += count
            return
        exc = _error_for(error)
        for proposal in group:
            proposal.on_done(None, None, exc)

    def _fail_pending(self, error: Exception) -> None:
        while self._pending:
            try:
                proposal = self._pending.popleft()
            except IndexError:
                break
            proposal.on_done(None, None, error)

    def _SyncObj__applyLogEntries(self):  # noqa: N802 (overrides the library's)
        """Apply committed entries until `apply_budget_bytes` is reached in a tick (the rest on the next ones).

        The library applies everything committed in one go. After a burst of big batches that was several
        entries of up to 4 MB (then the group-commit cap, about 13,000 jobs each) in one tick: 0.5-1 s in which
        no heartbeat was sent or read, on every node at once, so followers started elections under load. The
        commit index is lowered for the call and put back; nothing in between reads it.
        """
        commit = self._SyncObj__raftCommitIndex
        applied = self._SyncObj__raftLastApplied
        if commit <= applied + 1:
            return SyncObj._SyncObj__applyLogEntries(self)
        journal = self._journal
        first = journal[0][1]
        budget = self._settings.apply_budget_bytes
        cap = applied + 1
        used = len(journal[cap - first][0])
        while cap < commit and used < budget:
            cap += 1
            used += len(journal[cap - first][0])
        if cap >= commit:
            return SyncObj._SyncObj__applyLogEntries(self)
        self._SyncObj__raftCommitIndex = cap
        try:
            return SyncObj._SyncObj__applyLogEntries(self)
        finally:
            if self._SyncObj__raftCommitIndex == cap:
                self._SyncObj__raftCommitIndex = commit

    @replicated
    def apply_batch(self, blob: bytes):
        """The one replicated method: apply a JSON array of store commands; returns (index, results)."""
        index = self._SyncObj__raftLastApplied + 1
        started = time.monotonic()
        try:
            return index, self._state.apply_entry(blob, index)
        finally:
            self._apply_s += time.monotonic() - started

    def _on_state_changed(self, old: int, new: int) -> None:
        log.info("raft: %s -> %s at term %d", ROLE_NAMES.get(old, old), ROLE_NAMES.get(new, new),
                 self._SyncObj__raftCurrentTerm)
        if new != LEADER and self._pending:
            self._fail_pending(NotLeader(None, "this node lost leadership"))
        if new != LEADER:
            self._change_queued = False  # a new leader decides on changes; it refuses ours (below)
            self._drop_queued_changes()
            self._abandon_catch_up(NotLeader(None, "this node lost leadership"))
        if new == LEADER:
            self._housekeeping_in_flight = False
        elif self._handover is not None:  # it went: the held writes were failed above and go to the new leader
            _deadline, on_done, told = self._handover
            self._handover = None
            if not told:
                on_done(None, NotLeader(None, "this node lost leadership"))
        hook = self.on_role_change
        if hook is not None:
            hook(ROLE_NAMES.get(new, "follower"))

    # ----- messages -----------------------------------------------------------------------------------------
    def _SyncObj__onMessageReceived(self, node, message) -> None:  # noqa: N802 (overrides the library's)
        if not isinstance(message, dict) or (self.blocked_peers and node.address in self.blocked_peers):
            return
        kind = message.get("type")
        try:
            if kind == "append_entries":
                self._on_append_entries(node, message)
            elif kind == "rq_pre_vote":
                self._on_prevote_request(node, message)
            elif kind == "rs_pre_vote":
                self._on_prevote_response(node, message)
            elif kind == "apply_command" and isinstance(message.get("command"), bytes) \
                    and message["command"][:1] == _MEMBERSHIP_BYTE:
                # A membership change reaches the log only through our checks (_run_membership_ops), never
                # as a command another node passes on (the library does that with what a deposed leader queued).
                if "request_id" in message:
                    self._SyncObj__transport.send(node, {"type": "apply_command_response", "error":
                                                         FAIL_REASON.REQUEST_DENIED, "request_id": message["request_id"]})
            else:
                SyncObj._SyncObj__onMessageReceived(self, node, message)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            log.warning("raft: ignoring a malformed %r message from %s: %s", kind, node, exc)

    def _SyncObj__sendNextNodeIdx(self, node, reset=False, nextNodeIdx=None, success=False):  # noqa: N802,N803
        """D3: a success reply tells the leader we hold the entries: fdatasync first (once per tick)."""
        if nextNodeIdx is None:
            nextNodeIdx = self._journal[-1][1] + 1
        if success and self._journal.dirty:
            self._deferred_acks.append((node, reset, nextNodeIdx, success))
            return
        SyncObj._SyncObj__sendNextNodeIdx(self, node, reset=reset, nextNodeIdx=nextNodeIdx, success=success)

    def _send_deferred_acks(self) -> None:
        if not self._deferred_acks:
            return
        self._journal.sync()
        acks, self._deferred_acks = self._deferred_acks, []
        for node, reset, next_index, success in acks:
            SyncObj._SyncObj__sendNextNodeIdx(self, node, reset=reset, nextNodeIdx=next_index, success=success)

    def _on_append_entries(self, node, message: dict) -> None:
        term = message["term"]
        if term < self._SyncObj__raftCurrentTerm:
            return  # a deposed leader: it steps down when the current leader's heartbeats reach it
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__transferInProgress = False
        if not self._SyncObj__transferInProgress:
            self._SyncObj__raftElectionDeadline = monotonic_time() + self._SyncObj__generateRaftTimeout()
        if self._SyncObj__raftLeader != node:
            self._SyncObj__onLeaderChanged()
        self._SyncObj__raftLeader = node
        if term > self._SyncObj__raftCurrentTerm:
            self._SyncObj__setCurrentTerm(term, None)
        self._SyncObj__setState(FOLLOWER)
        self._last_leader_contact = monotonic_time()
        self._prevote_ok_term = None  # a live leader: any election a pre-vote allowed is off
        leader_commit = int(message["commit_index"])
        self._SyncObj__leaderCommitIndex = leader_commit

        if "prevLogIdx" in message:
            entries = message.get("entries") or []
            transmission = message.get("transmission")
            if transmission is not None:
                entries = self._collect_transmission(transmission, message.get("data", b""))
                if entries is None:
                    SyncObj._SyncObj__sendNextNodeIdx(self, node, reset=False, success=False)
                    return
            self._append(node, message["prevLogIdx"], message["prevLogTerm"], entries, leader_commit)
        elif "serialized" in message:
            if self._transfer.receive(message["serialized"]):
                self._install_incoming_snapshot(node, leader_commit)

    def _collect_transmission(self, transmission: str, data: bytes):
        """Reassemble an entry the leader sent in chunks (it does so for entries >= its batch size)."""
        if transmission == "start":
            self._transmission = data
            return None
        self._transmission += data
        if transmission != "finish":
            return None
        from raftqueue.raft.transport import safe_loads
        try:
            entry = safe_loads(self._transmission)
        except Exception:
            return None  # the library may flag 'finish' one chunk early: wait for the rest
        self._transmission = b""
        return [entry]

    def _append(self, node, prev_index: int, prev_term: int, entries: list, leader_commit: int) -> None:
        """Raft §5.3 AppendEntries on the follower (D2)."""
        journal = self._journal
        first_index = journal[0][1]
        commit = self._SyncObj__raftCommitIndex
        applied = self._SyncObj__raftLastApplied
        if prev_index is None:
            SyncObj._SyncObj__sendNextNodeIdx(self, node, reset=True, success=False)
            return
        if prev_index < first_index:
            # Entries at or before our oldest entry are covered by our snapshot, hence committed and identical.
            entries = [e for e in entries if e[1] > first_index]
            if not entries:
                self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=max(commit, first_index) + 1, success=True)
                return
            prev_index, prev_term = first_index, journal[0][2]
            if entries[0][1] != prev_index + 1:
                SyncObj._SyncObj__sendNextNodeIdx(self, node, reset=True, success=False)
                return
        last_index = journal[-1][1]
        if prev_index > last_index:
            SyncObj._SyncObj__sendNextNodeIdx(self, node, nextNodeIdx=last_index + 1, reset=True, success=False)
            return
        if journal[prev_index - first_index][2] != prev_term:
            if prev_index <= commit:
                log.critical("raft: leader %s disagrees about committed entry %d; refusing its entries",
                             node, prev_index)
                return
            SyncObj._SyncObj__sendNextNodeIdx(self, node, nextNodeIdx=prev_index, reset=True, success=False)
            return

        dynamic = self._SyncObj__conf.dynamicMembershipChange
        new_entries: list = []
        for i, entry in enumerate(entries):
            index = entry[1]
            if index != prev_index + 1 + i:
                log.warning("raft: non-contiguous entries from %s; asking for a resend", node)
                SyncObj._SyncObj__sendNextNodeIdx(self, node, nextNodeIdx=journal[-1][1] + 1, reset=True)
                return
            position = index - first_index
            if position < len(journal):
                if journal[position][2] == entry[2]:
                    continue  # already held: same index and term means the same entry (Log Matching)
                if index <= max(commit, applied):
                    log.critical("raft: refusing to truncate committed entry %d (commit %d, applied %d)",
                                 index, commit, applied)
                    return
                if dynamic:
                    for old in reversed(journal[position:]):
                        change = self._SyncObj__parseChangeClusterRequest(old[0])
                        if change is not None:
                            self._SyncObj__doChangeCluster(change, reverse=True)
                journal.deleteEntriesFrom(position)
            new_entries = entries[i:]
            break
        for entry in new_entries:
            journal.add(*entry)
            if dynamic:
                change = self._SyncObj__parseChangeClusterRequest(entry[0])
                if change is not None:
                    self._SyncObj__doChangeCluster(change)

        last_new = prev_index + len(entries)
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=last_new + 1, success=True)
        if leader_commit > commit:
            self._SyncObj__raftCommitIndex = min(leader_commit, last_new)
            journal.setRaftCommitIndex(self._SyncObj__raftCommitIndex)

    # ----- pre-vote (D4) ----------------------------------------------------------------------------------------
    def _gated_tick(self, wait_s: float) -> None:
        """One library tick, during which it can start only an election a pre-vote allowed.

        First, time since the previous tick that this node could not listen (beyond the wait it asked the
        poller for) is taken off its peers' account: the library judges them before it reads its sockets."""
        now = time.monotonic()
        if self._last_tick_at is not None:
            deaf_s = now - self._last_tick_at - self._last_tick_wait_s
            if deaf_s > self._settings.election_min_s:
                self._discount_own_stall(deaf_s)
        self._last_tick_at, self._last_tick_wait_s = now, wait_s
        held = self._maybe_prevote()
        try:
            self.doTick(wait_s)
        finally:
            self._release_deadline(held)

    def _release_deadline(self, held: float | None) -> None:
        if held is not None and self._SyncObj__raftElectionDeadline == _HELD:
            self._SyncObj__raftElectionDeadline = held  # the tick set no new one: the held one stands

    def _maybe_prevote(self) -> float | None:
        """Before the library starts an election, ask whether a majority would vote: if not, nobody's term moves.

        Unless a pre-vote has allowed an election, the library's election deadline is held out of its reach for
        the coming tick and the held value returned (the tick loop puts it back unless the tick set a new one):
        otherwise a deadline falling between our check and the library's, a few microseconds, or a GIL switch,
        apart, would start an election no pre-vote allowed.
        """
        state = self._SyncObj__raftState
        term = self._SyncObj__raftCurrentTerm
        now = monotonic_time()
        if self._prevote_ok_term is not None and (term != self._prevote_ok_term or state == LEADER
                                                  or now > self._prevote_ok_until):
            # The election we allowed has started (or ended), or the permission went stale unused: one left
            # armed would let a later timeout (a cut-off follower) skip the pre-vote and depose a live leader.
            self._prevote_ok_term = None
        if state == LEADER or self._SyncObj__selfNode is None:
            self._deadline_seen = False
            return None
        if self._prevote_ok_term is not None or self._SyncObj__transferInProgress:
            return None  # let the library run the election we (or the leader handing over) allowed
        if self._SyncObj__raftElectionDeadline >= now:
            self._deadline_seen = False
        elif self._SyncObj__connectedToAnyone() and not self._leader_may_only_be_stalled(now):
            self._send_prevote(term, now)
        if self._prevote_ok_term is not None:
            return None  # we are the only member: the quorum was us
        held, self._SyncObj__raftElectionDeadline = self._SyncObj__raftElectionDeadline, _HELD
        return held

    def _leader_may_only_be_stalled(self, now: float) -> bool:
        """Whether a passed election deadline should wait rather than start a pre-vote.

        - The first tick that finds it passed only looks: that tick reads what has arrived meanwhile. After this
          node's own stall (its collector, a starved CPU, a snapshot install), the leader's heartbeats are
          waiting in the socket and reset the deadline.
        - While the connection to the leader is open, its silence is given `stall_grace_s` from its last
          append. Under a load that starves the machine, a leader's tick stalled for 0.5-1 s and its followers
          elected another (measured: up to six leader changes in the bench's scenario 6). A crashed leader
          process closes its connections, so that failover is not slowed; a hung or cut-off one is replaced
          after the grace.
        """
        if not self._deadline_seen:
            self._deadline_seen = True
            return True
        leader = self._SyncObj__raftLeader
        return (leader is not None and leader in self._SyncObj__connectedNodes
                and now - self._last_leader_contact < self._settings.stall_grace_s)

    def _discount_own_stall(self, deaf_s: float) -> None:
        """Time this node could not listen is not evidence against the others: push their timers back by it.

        After a stall of its own (a long fsync, its collector, a starved CPU, or the whole host paused, as a VM
        or a laptop is), a node would otherwise judge its peers by silence it could not have heard. A leader
        stepped down at its first tick (it checks its followers' answers before reading its sockets), and
        followers elected a new leader, though nobody had failed: seen as a leader change, and 504s for the
        writes in flight, after all three nodes of a local cluster stalled for 1.68 s together. Now a leader
        moves its followers' last answers, and a follower its leader's last contact and its election deadline,
        later by the stall. At most once per two leader_fallback_s, so a node that is slow all the time still
        times its peers out, only later."""
        now = monotonic_time()
        if now - self._last_stall_discount < 2 * self._settings.leader_fallback_s:
            return
        self._last_stall_discount = now
        if self._SyncObj__raftState == LEADER:
            answered = self._SyncObj__lastResponseTime
            for peer in list(answered):
                answered[peer] = min(now, answered[peer] + deaf_s)
        else:
            self._last_leader_contact = min(now, self._last_leader_contact + deaf_s)
            self._SyncObj__raftElectionDeadline += deaf_s
        log.info("raft: this node could not listen for %.2f s; that time is not counted against its peers", deaf_s)

    def _send_prevote(self, term: int, now: float) -> None:
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        self._prevote_round += 1
        self._prevote_grants = {self._SyncObj__selfNode}
        journal = self._journal
        request = {"type": "rq_pre_vote", "term": term + 1, "round": self._prevote_round,
                   "last_log_index": journal[-1][1], "last_log_term": journal[-1][2]}
        for other in self._SyncObj__otherNodes:
            self._SyncObj__transport.send(other, request)
        self._check_prevote_quorum()

    def _on_prevote_request(self, node, message: dict) -> None:
        journal = self._journal
        our_last_term, our_last_index = journal[-1][2], journal[-1][1]
        up_to_date = (message["last_log_term"] > our_last_term or
                      (message["last_log_term"] == our_last_term and message["last_log_index"] >= our_last_index))
        leader_alive = (self._SyncObj__raftState == LEADER or
                        (self._SyncObj__raftLeader is not None and
                         monotonic_time() - self._last_leader_contact < self._settings.election_min_s))
        granted = bool(message["term"] > self._SyncObj__raftCurrentTerm and up_to_date and not leader_alive)
        self._SyncObj__transport.send(node, {"type": "rs_pre_vote", "term": message["term"],
                                             "round": message["round"], "granted": granted,
                                             "current_term": self._SyncObj__raftCurrentTerm})

    def _on_prevote_response(self, node, message: dict) -> None:
        current = message.get("current_term")
        if not message.get("granted") and isinstance(current, int) and current > self._SyncObj__raftCurrentTerm:
            # A member is at a higher term (its own elections failed): adopt it so our next pre-vote can win.
            self._SyncObj__setCurrentTerm(current, None)
            if self._SyncObj__raftState != FOLLOWER:
                self._SyncObj__setState(FOLLOWER)
            return
        if (message.get("granted") and message.get("round") == self._prevote_round
                and message.get("term") == self._SyncObj__raftCurrentTerm + 1
                and self._SyncObj__raftState != LEADER):
            self._prevote_grants.add(node)
            self._check_prevote_quorum()

    def _check_prevote_quorum(self) -> None:
        members = len(self._SyncObj__otherNodes) + 1
        if len(self._prevote_grants) * 2 > members:
            self._prevote_ok_term = self._SyncObj__raftCurrentTerm
            self._prevote_ok_until = monotonic_time() + self._settings.election_min_s
            self._SyncObj__raftElectionDeadline = 0  # the library starts the real election on this tick

    # ----- snapshots and compaction (D1, D7) ---------------------------------------------------------------------
    def _snapshot_files(self) -> list[Path]:
        return sorted(self._snap_dir.glob("snap-*.bin"))

    def _newest_snapshot_path(self) -> Path | None:
        files = self._snapshot_files()
        return files[-1] if files else None

    def _load_newest_snapshot(self):
        for path in reversed(self._snapshot_files()):
            try:
                loaded = read_snapshot(path)
            except CorruptSnapshot as exc:
                log.error("snapshot %s is damaged (%s); trying an older one", path, exc)
                continue
            if loaded is None:
                continue
            header, body = loaded
            self._state.restore_body(body, header.index)
            return header, body
        return None

    def _snapshot_path_for(self, index: int) -> Path:
        return self._snap_dir / f"snap-{index:020d}.bin"

    def force_compaction(self) -> None:
        self._force_compaction = True

    def _SyncObj__tryLogCompaction(self) -> None:  # noqa: N802 (replaces the library's fork-and-pickle dump)
        if self._compaction_pid:
            self._reap_compaction()
            return
        applied = self._SyncObj__raftLastApplied
        journal = self._journal
        if applied < 3 or applied - 1 <= journal[0][1] or monotonic_time() < self._compaction_retry_at:
            return
        if not self._force_compaction and not self._compaction_due(applied - self._snapshot_index,
                                                                   journal.payload_bytes):
            return
        self._force_compaction = False
        first = journal[0][1]
        prev, last = journal[applied - 1 - first], journal[applied - first]
        header = SnapshotHeader(index=applied, term=last[2], prev=prev, last=last,
                                members=sorted(self._applied_members),
                                member_specs=membership.as_list(self._applied_members))
        journal.roll_segment()
        target = self._snapshot_path_for(applied)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # child: write the snapshot of the state as of `applied`, then vanish
            code = 1
            try:
                prepare_child(parent)
                write_snapshot(target, header, self._state.snapshot_body(), fsync=self._settings.fsync,
                               bytes_per_s=self._settings.snapshot_write_bytes_per_s)
                code = 0
            finally:
                os._exit(code)
        self._compaction_pid = pid
        self._compaction_header = header

    def _compaction_due(self, entries_since: int, log_bytes: int) -> bool:
        """Snapshot after `compact_min_entries` entries, but not before the log since the last snapshot holds
        `compact_growth` of its size: rewriting a million-job state (hundreds of MB, seconds of CPU on every
        node) for a few MB of lease/ack entries took a third of the machine. Disk stays within
        (1 + growth) x the snapshot; a restart replays at most that much log. A huge log snapshots anyway."""
        settings = self._settings
        growth = settings.compact_growth * self._last_snapshot_bytes()
        if log_bytes >= max(settings.compact_min_bytes, growth):
            return True
        return entries_since >= settings.compact_min_entries and log_bytes >= growth

    def _last_snapshot_bytes(self) -> int:
        index, size = self._snapshot_size
        if index != self._snapshot_index:
            newest = self._newest_snapshot_path()
            try:
                size = newest.stat().st_size if newest is not None else 0
            except OSError:
                size = 0
            self._snapshot_size = (self._snapshot_index, size)
        return size

    def _reap_compaction(self) -> None:
        try:
            pid, status = os.waitpid(self._compaction_pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self._compaction_pid, 1
        if pid == 0:
            return
        self._compaction_pid = 0
        header, self._compaction_header = self._compaction_header, None
        if status != 0 or header is None:
            log.error("snapshot child failed (status %s); retrying in 5 s", status)
            self._compaction_retry_at = monotonic_time() + 5.0
            return
        self._after_snapshot(header)

    def _after_snapshot(self, header: SnapshotHeader) -> None:
        """The snapshot is durable: only now forget the entries it covers (keeping its last two)."""
        if header.index <= self._snapshot_index:
            return  # a newer snapshot was installed from the leader while this one was being written
        self._snapshot_index = header.index
        journal = self._journal
        keep_from = header.prev[1] - journal[0][1]
        if keep_from > 0:
            journal.deleteEntriesTo(keep_from)
        for path in self._snapshot_files():
            if path.name < self._snapshot_path_for(header.index).name:
                path.unlink(missing_ok=True)
        log.info("snapshot at index %d written; log now starts at %d", header.index, journal[0][1])

    def _install_incoming_snapshot(self, node, leader_commit: int) -> None:
        incoming = self._settings.data_dir / "snapshot.incoming"
        try:
            header = read_snapshot_header(incoming)  # the body (hundreds of MB) stays on disk unless needed
        except (OSError, CorruptSnapshot) as exc:
            log.error("snapshot from %s unusable: %s", node, exc)
            return
        journal = self._journal
        first, last = journal[0][1], journal[-1][1]
        if first <= header.index <= last and journal[header.index - first][2] == header.term:
            # D7: we already hold the snapshot's last entry; keep our log and everything after it (Raft §7).
            Path(incoming).unlink(missing_ok=True)
            log.info("snapshot at index %d from %s not needed: this log holds that entry", header.index, node)
        else:
            try:
                loaded = read_snapshot(incoming)
                if loaded is None:
                    raise CorruptSnapshot("the file is gone")
            except (OSError, CorruptSnapshot) as exc:
                log.error("snapshot from %s unusable: %s", node, exc)
                return
            header, body = loaded
            if header.index <= self._SyncObj__raftLastApplied:
                log.critical("raft: snapshot at %d conflicts with applied state at %d; ignoring it",
                             header.index, self._SyncObj__raftLastApplied)
                return
            target = self._snapshot_path_for(header.index)
            os.replace(incoming, target)
            if self._settings.fsync:
                fsync_dir(self._snap_dir)
            self._state.restore_body(body, header.index)
            journal.reset(header.base_entries)
            self._SyncObj__raftLastApplied = header.index
            self._snapshot_index = header.index
            if header.member_specs is not None:  # else a leader of an older build: keep what this node has
                self._applied_members = membership.by_addr(header.member_specs)
                self._set_members(self._applied_members)
            self._fail_waiting_up_to(header.index)
            for path in self._snapshot_files():
                if path != target:
                    path.unlink(missing_ok=True)
            log.info("installed snapshot at index %d from %s", header.index, node)
        if self._SyncObj__raftCommitIndex < header.index:
            self._SyncObj__raftCommitIndex = header.index
            journal.setRaftCommitIndex(header.index)
        # Only the snapshot's entries are known to match the leader's: a log kept under D7 may hold a tail from
        # another term after them, which the leader's next append finds and replaces (Raft §5.3).
        self._SyncObj__sendNextNodeIdx(node, nextNodeIdx=header.index + 1, success=True)

    def _fail_waiting_up_to(self, index: int) -> None:
        waiting = self._SyncObj__commandsWaitingCommit
        for idx in sorted(k for k in waiting if k <= index):
            for _term, callback in waiting.pop(idx):
                callback(None, FAIL_REASON.UNKNOWN_OUTCOME)

    # ----- membership (D9) ------------------------------------------------------------------------------------
    def _load_members(self, header: SnapshotHeader | None) -> None:
        """The members as of the snapshot (or, without one that records them, the start-up flags), then every
        membership entry in the log after it: Raft uses the latest list in the log, committed or not."""
        settings = self._settings
        boot = membership.by_addr(settings.members) or {
            a: membership.spec(a, a, "") for a in [settings.self_addr, *settings.peer_addrs]}
        saved = header.member_specs if header is not None else None
        self._applied_members = membership.by_addr(saved) if saved is not None else boot
        journal = self._journal
        after = [journal[i][0] for i in range(len(journal)) if journal[i][1] > self._snapshot_index
                 and journal[i][0][:1] == _MEMBERSHIP_BYTE]
        latest = membership.replay(self._applied_members, after)
        if settings.members_from_flags and latest != boot:
            log.warning("raft: --members-from-flags: using the start-up flags (%s), not the members recorded in this "
                        "node's snapshot and log (%s); a snapshot recording them follows the first new entry",
                        _describe(boot), _describe(latest))
            self._applied_members = latest = boot
            self._skip_membership_up_to = journal[-1][1]  # the old log's changes are not applied either
            self._force_compaction = True
        elif set(latest) != set(boot) or any(latest[a]["id"] != boot[a]["id"] for a in latest if a in boot):
            log.warning("raft: the members recorded in this node's snapshot and log (%s) differ from its start-up "
                        "flags (%s); using the recorded ones (change members with POST/DELETE /cluster/members)",
                        _describe(latest), _describe(boot))
        self._set_members(latest)

    def _set_members(self, members: dict[str, dict]) -> None:
        """Make `members` this node's latest list: Raft peers and transport follow it."""
        self_addr = self._SyncObj__selfNode.address
        peers = [a for a in members if a != self_addr]
        leading = self._SyncObj__raftState == LEADER
        for addr in self._transport_extra & set(peers):  # a voter again: the library adds it afresh
            self._drop_transport_node(addr)
        self._transport_extra -= set(peers)
        before = set(self._SyncObj__otherNodes)
        self._SyncObj__updateClusterConfiguration(peers)
        after = set(self._SyncObj__otherNodes)
        for node in before - after:
            self._SyncObj__connectedNodes.discard(node)  # the library's dropNode leaves it marked connected
            self._transfer.cancelTransmisstion(node)  # a snapshot being sent to it: close the file
        if leading:
            now = monotonic_time()
            for node in after - before:
                self._SyncObj__lastResponseTime[node] = now  # the library's step-down check reads every peer's
        self._sync_transport()
        self._publish_members(members)

    def _sync_transport(self) -> None:
        """Stay reachable by the committed members and the current leader as well; they get connections, not
        votes or entries.
        - A removal in this log that is not committed yet may be undone by a leader that never had it (it can
          win under the committed list); if its connection were refused, this node would never hear of the undo.
        - A node added after the newest snapshot can lead and send that snapshot, which does not list it, to a
          new node; its own add entry follows in the log, but only if its connection is not refused."""
        transport = self._SyncObj__transport
        voters = {n.address for n in self._SyncObj__otherNodes}
        wanted = set(self._applied_members)
        leader = self._SyncObj__raftLeader
        if leader is not None and self._SyncObj__raftState != LEADER:
            wanted.add(leader.address)
        wanted -= voters | {self._SyncObj__selfNode.address}
        for addr in self._transport_extra - wanted:
            self._drop_transport_node(addr)
        for addr in wanted - self._transport_extra:
            if addr not in transport._nodeAddrToNode:
                transport.addNode(self._SyncObj__nodeClass(addr))
        self._transport_extra = wanted

    def _drop_transport_node(self, addr: str) -> None:
        node = self._SyncObj__transport._nodeAddrToNode.get(addr)
        if node is not None:
            self._SyncObj__transport.dropNode(node)
            self._SyncObj__connectedNodes.discard(node)

    def _publish_members(self, members: dict[str, dict]) -> None:
        self._members = dict(members)  # replaced whole: readers on other threads see one list or the other
        hook = self.on_members_change
        if hook is not None:
            hook(membership.as_list(members))

    @property
    def member_list(self) -> list[dict]:
        """The latest members in this node's log (any thread)."""
        return membership.as_list(self._members)

    def responsive_peers(self) -> set[str]:
        """On the leader: the Raft addresses of members connected to it that answered within the step-down
        timeout (any thread). Empty on a follower."""
        if self._SyncObj__raftState != LEADER:
            return set()
        limit = monotonic_time() - self._settings.leader_fallback_s
        for _ in range(3):  # the tick thread may add or remove a peer meanwhile
            try:
                answered = list(self._SyncObj__lastResponseTime.items())
                # connected too: a new leader counts every peer as having just answered
                voters = set(self._SyncObj__otherNodes) & set(self._SyncObj__connectedNodes)
                break
            except RuntimeError:
                continue
        else:
            return set()
        return {node.address for node, at in answered if at >= limit and node in voters}

    @property
    def applied_member_list(self) -> list[dict]:
        """The members as of the applied index: changes known to be committed (any thread)."""
        return membership.as_list(self._applied_members)

    def change_members(self, op: str, member: dict, on_done: Callable[[int | None, Exception | None], None],
                       catch_up_idle_s: float = 20.0) -> None:
        """Propose adding or removing one member (any thread). `on_done(index, error)` runs on the tick thread
        once the change is applied here; a change the leader refuses (another one in flight, or no entry of
        its term committed yet) fails with `ChangeRefused`. A node to add first catches up with the log
        without a vote (`CatchUp`, `catching_up`) for as long as it makes progress: `on_done` runs once it was
        added, or with `CatchUpEnded` after `catch_up_idle_s` without progress."""
        self._membership_ops.append(("change", (op, member, catch_up_idle_s), on_done))
        self._wake()

    def cancel_catch_up(self, member_id: str, on_done: Callable[[int | None, Exception | None], None]) -> None:
        """Give up catching up `member_id` before its add (any thread): a node that keeps progressing but never
        catches up (slower than the writes) would otherwise hold the one membership change for ever. `on_done`
        gets `ChangeRefused` when no such catch-up runs here."""
        self._membership_ops.append(("cancel", member_id, on_done))
        self._wake()

    def transfer_leadership(self, on_done: Callable[[int | None, Exception | None], None]) -> None:
        """Hand leadership to the most caught-up connected follower (any thread). New writes wait meanwhile
        (Raft thesis §3.10: under steady writes no follower is ever exactly caught up otherwise), for at most
        an election timeout. `on_done(None, error)` says whether the follower was told to take over, not
        whether it won; the held writes fail over to the new leader like any other."""
        self._membership_ops.append(("transfer", None, on_done))
        self._wake()

    def _holding_for_handover(self) -> bool:
        """On the leader's tick: while a hand-over runs, propose nothing; tell the follower once it caught up."""
        if self._handover is None:
            return False
        deadline, on_done, told = self._handover
        if monotonic_time() > deadline:
            self._handover = None
            if not told:
                on_done(None, ChangeRefused("no follower caught up with the leader in time"))
            return False
        if not told:
            last = self._journal[-1][1]
            match = self._SyncObj__raftMatchIndex
            ready = [(node.id, node) for node in self._SyncObj__otherNodes
                     if node in self._SyncObj__connectedNodes and match.get(node, 0) == last]
            if ready:
                self._handover = (deadline, on_done, True)
                self.transferLeadership(max(ready)[1], callback=functools.partial(_transfer_done, on_done))
        return True

    def _change_finished(self, on_done: Callable[[int | None, Exception | None], None], result, error) -> None:
        self._change_queued = False
        _change_done(on_done, result, error)

    def _run_membership_ops(self) -> None:
        while self._membership_ops:
            kind, argument, on_done = self._membership_ops.popleft()
            if self._SyncObj__raftState != LEADER:
                on_done(None, NotLeader(self.leader_addr, "this node is not the leader"))
            elif kind == "cancel":
                catch_up = self._catch_up
                if catch_up is None or catch_up.member["id"] != argument:
                    on_done(None, ChangeRefused(f"{argument} is not catching up here"))
                else:
                    log.info("raft: catching up %s cancelled; it was not added", argument)
                    self._abandon_catch_up(CatchUpEnded(f"adding {argument} was cancelled before it caught up"))
                    on_done(None, None)
            elif kind == "transfer":
                if self._handover is not None:
                    on_done(None, ChangeRefused("a hand-over is already running"))
                else:
                    self._handover = (monotonic_time() + self._settings.election_max_s * 2, on_done, False)
            elif self._change_queued or self._change_in_flight():
                on_done(None, ChangeRefused("another membership change is not applied yet; retry in a moment"))
            elif not self.leader_ready:
                on_done(None, ChangeRefused("the leader was just elected and has not committed an entry of its "
                                            "term yet; retry in a moment"))
            else:
                op, member, catch_up_idle_s = argument
                # Queued, caught up, or in the library's queue (which appends it maybe ticks later, its loop is
                # time-bounded): until its callback runs, it counts as in flight even before it is in the log.
                self._change_queued = True
                if op == membership.ADD and member["raft_addr"] not in self._members:
                    self._start_catch_up(member, on_done, catch_up_idle_s)
                else:
                    self._propose_change(op, member, on_done)

    def _propose_change(self, op: str, member: dict, on_done: Callable[[int | None, Exception | None], None]) -> None:
        self._applyCommand(membership.encode_change(op, member),
                           functools.partial(self._change_finished, on_done), membership.MEMBERSHIP)

    def _start_catch_up(self, member: dict, on_done, idle_s: float) -> None:
        """Replicate to `member` as a read-only node: the library sends entries (or the snapshot) to those as
        to its peers, and counts none of them toward a commit, the step-down check or an election."""
        addr = member["raft_addr"]
        transport = self._SyncObj__transport
        node = transport._nodeAddrToNode.get(addr)
        if node is None:
            node = self._SyncObj__nodeClass(addr)
            transport.addNode(node)
        self._SyncObj__readonlyNodes.add(node)
        last = self._journal[-1][1]
        self._SyncObj__raftNextIndex[node] = last + 1
        self._SyncObj__raftMatchIndex[node] = 0
        now = monotonic_time()
        self._catch_up = CatchUp(member, node, on_done, idle_s, last, now, progressed_at=now)
        log.info("raft: %s (%s) is catching up with the log before it is added", member["id"], addr)

    def _advance_catch_up(self) -> None:
        """On the leader's tick: add the learning node once a round was short, or give up once it has made no
        progress for its idle time."""
        catch_up = self._catch_up
        if catch_up is None:
            return
        now = monotonic_time()
        match = self._SyncObj__raftMatchIndex.get(catch_up.node, 0)
        progress = (match, self._transfer.bytes_sent(catch_up.node))
        if progress != catch_up.progress:
            catch_up.progress, catch_up.progressed_at = progress, now
        if match >= catch_up.round_target:
            if now - catch_up.round_started <= self._settings.election_min_s:
                self._end_catch_up()
                self._propose_change(membership.ADD, catch_up.member, catch_up.on_done)
                return
            catch_up.round_target, catch_up.round_started = self._journal[-1][1], now
        if now - catch_up.progressed_at > catch_up.idle_s:
            message = (f"{catch_up.member['id']} made no progress catching up with the log for {catch_up.idle_s:.0f} s "
                       f"(it holds up to index {match} of {self._journal[-1][1]}): is it running, and does it reach "
                       f"this node at {self._SyncObj__selfNode.address}? It was not added")
            log.warning("raft: %s", message)
            self._abandon_catch_up(CatchUpEnded(message))

    def _abandon_catch_up(self, error: Exception) -> None:
        """End a catch-up without adding the node: the change it held is over, its caller gets `error`."""
        catch_up = self._catch_up
        if catch_up is None:
            return
        self._end_catch_up()
        self._change_queued = False
        catch_up.on_done(None, error)

    def _end_catch_up(self) -> None:
        """Stop treating the node as a learner, and close its connection: once its add entry is appended (at once,
        if it caught up), the library connects to it afresh as a peer."""
        catch_up, self._catch_up = self._catch_up, None
        if catch_up is None:
            return
        node = catch_up.node
        self._SyncObj__readonlyNodes.discard(node)
        self._transfer.cancelTransmisstion(node)  # a snapshot being sent to it: close the file
        self._SyncObj__raftNextIndex.pop(node, None)
        self._SyncObj__raftMatchIndex.pop(node, None)
        self._SyncObj__lastResponseTime.pop(node, None)
        addr = catch_up.member["raft_addr"]
        if addr not in self._transport_extra and node not in self._SyncObj__otherNodes:
            self._drop_transport_node(addr)

    def _drop_queued_changes(self) -> None:
        """No longer leader: fail membership changes still in the library's queue (it would pass them on to
        the new leader, past that leader's checks)."""
        commands = self._SyncObj__commandsQueue
        kept = []
        while True:
            try:
                item = commands.get_nowait()
            except queue.Empty:
                break
            if item[0][:1] == _MEMBERSHIP_BYTE:
                if item[1] is not None and not isinstance(item[1], tuple):
                    item[1](None, FAIL_REASON.NOT_LEADER)
            else:
                kept.append(item)
        for item in kept:
            commands.put_nowait(item)

    def _change_in_flight(self) -> bool:
        """A membership entry in the log that is not applied yet. Single-server changes are safe only one at
        a time (Raft thesis §4.1); the library means to check this but never records the entry's index."""
        journal = self._journal
        start = max(self._SyncObj__raftLastApplied + 1 - journal[0][1], 0)
        return any(journal[i][0][:1] == _MEMBERSHIP_BYTE for i in range(start, len(journal)))

    def _SyncObj__parseChangeClusterRequest(self, command):  # noqa: N802 (overrides the library's pickle.loads)
        try:
            change = membership.decode_change(command)
        except membership.BadChange as exc:
            log.error("raft: %s; ignoring it", exc)
            return None
        if change is None:
            return None
        op, member = change
        return [op, member["raft_addr"], self._SyncObj__nodeClass(member["raft_addr"]), member]

    def _SyncObj__doChangeCluster(self, request, reverse=False):  # noqa: N802 (library's name)
        """Apply (or undo) one change to the latest member list, as the entry enters (or leaves) the log."""
        member = request[3] if len(request) > 3 else None
        if member is None:
            return False  # a request in the library's own format: not ours, not applied
        adding = (request[0] == membership.ADD) != reverse
        if (member["raft_addr"] in self._members) == adding:
            return False  # already in (or already out of) the list: nothing changes
        if member["raft_addr"] == self._SyncObj__selfNode.address and self._SyncObj__raftState == LEADER:
            return False  # a leader does not change itself; it hands over first (api/membership.py)
        self._set_members(membership.changed(self._members, request[0], member, reverse))
        log.info("raft: member %s %s (%s)", member["id"], "added" if adding else "removed", member["raft_addr"])
        return True

    def _SyncObj__doApplyCommand(self, command):  # noqa: N802 (library's name)
        if command[:1] != _MEMBERSHIP_BYTE:
            return SyncObj._SyncObj__doApplyCommand(self, command)
        # The change itself took effect when the entry was appended; applied, it is part of the state a
        # snapshot at this index records.
        index = self._SyncObj__raftLastApplied + 1
        try:
            change = membership.decode_change(command)
        except membership.BadChange as exc:  # written by a newer build: stop rather than differ (see CannotApply)
            raise CannotApply(index, str(exc)) from None
        if change is not None and index > self._skip_membership_up_to:
            self._applied_members = membership.changed(self._applied_members, *change)
            self._sync_transport()
        return index  # for the proposer

    # ----- status -----------------------------------------------------------------------------------------------
    @property
    def role(self) -> str:
        return ROLE_NAMES.get(self._SyncObj__raftState, "follower")

    @property
    def is_leader(self) -> bool:
        return self._SyncObj__raftState == LEADER

    @property
    def leader_addr(self) -> str | None:
        leader = self._SyncObj__raftLeader
        return leader.address if leader is not None else None

    @property
    def term(self) -> int:
        return self._SyncObj__raftCurrentTerm

    @property
    def commit_index(self) -> int:
        return self._SyncObj__raftCommitIndex

    @property
    def applied_index(self) -> int:
        return self._SyncObj__raftLastApplied

    @property
    def leader_commit_index(self) -> int | None:
        return self._SyncObj__leaderCommitIndex

    @property
    def last_log_index(self) -> int:
        return self._journal[-1][1]

    @property
    def snapshot_index(self) -> int:
        return self._snapshot_index

    @property
    def leader_ready(self) -> bool:
        """Leader whose first entry of its term (the no-op) is applied: its state includes every commit."""
        noop = self._SyncObj__noopIDx
        return self.is_leader and noop is not None and self._SyncObj__raftLastApplied >= noop

    def is_ready(self) -> bool:
        """Knows a live leader and has applied up to the leader's commit index it last heard (recomputed)."""
        if self.is_leader:
            return self.leader_ready
        if self._SyncObj__raftLeader is None:
            return False
        if monotonic_time() - self._last_leader_contact > self._settings.election_max_s * 2:
            return False
        leader_commit = self._SyncObj__leaderCommitIndex
        return leader_commit is not None and self._SyncObj__raftLastApplied >= leader_commit

    def catching_up(self) -> dict | None:
        """On the leader: the node being brought up to date before its add (`CatchUp`), or None (any thread)."""
        catch_up = self._catch_up
        if catch_up is None:
            return None
        return {**catch_up.member, "match_index": self._SyncObj__raftMatchIndex.get(catch_up.node, 0),
                "connected": catch_up.node in self._SyncObj__connectedNodes,
                "snapshot_bytes_sent": catch_up.progress[1],
                "idle_s": round(max(0.0, monotonic_time() - catch_up.progressed_at), 1)}

    def members(self) -> list[dict]:
        match = dict(self._SyncObj__raftMatchIndex) if self.is_leader else {}
        connected = self._SyncObj__connectedNodes
        out = [{"raft_addr": self._SyncObj__selfNode.address, "self": True, "connected": True,
                "match_index": self.last_log_index if self.is_leader else None}]
        for node in sorted(self._SyncObj__otherNodes, key=lambda n: n.address):
            out.append({"raft_addr": node.address, "self": False, "connected": node in connected,
                        "match_index": match.get(node) if self.is_leader else None})
        return out
