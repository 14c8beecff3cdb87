"""The durable journal, snapshot files and the Raft frame parser, without processes."""
from __future__ import annotations

import os
import pickle
import time
import zlib

import pytest

from raftqueue.raft.journal import NO_OP_COMMAND, CorruptLog, DurableJournal
from raftqueue.raft.snapshot_file import (CorruptSnapshot, SnapshotHeader, read_snapshot, read_snapshot_header,
                                          write_snapshot)
from raftqueue.raft.transport import bounded_decompress, safe_loads


def _fill(journal: DurableJournal, start: int, count: int, term: int = 1) -> None:
    for i in range(start, start + count):
        journal.add(f"cmd{i}".encode(), i, term)
    journal.sync()


def test_fresh_journal_starts_with_the_libraries_noop(tmp_path):
    journal = DurableJournal(tmp_path)
    assert journal[0] == (NO_OP_COMMAND, 1, 0) and len(journal) == 1


def test_entries_term_and_vote_survive_reopen(tmp_path):
    journal = DurableJournal(tmp_path)
    _fill(journal, 2, 50)
    journal.setCurrentTerm(7, "127.0.0.1:1")
    journal.setRaftCommitIndex(40)
    journal.close()
    again = DurableJournal(tmp_path)
    assert [e[1] for e in again] == list(range(1, 52))
    assert again[-1] == (b"cmd51", 51, 1)
    assert again.getCurrentTerm() == 7 and again.getVotedForNodeId() == "127.0.0.1:1"
    assert again.getRaftCommitIndex() == 40


def test_torn_tail_is_cut_and_the_rest_kept(tmp_path):
    journal = DurableJournal(tmp_path)
    _fill(journal, 2, 10)
    journal.close()
    segment = sorted(tmp_path.glob("log-*.seg"))[-1]
    data = segment.read_bytes()
    segment.write_bytes(data[:-5])  # a crash in the middle of the last record
    again = DurableJournal(tmp_path)
    assert again[-1][1] == 10
    _fill(again, 11, 1)
    again.close()
    assert DurableJournal(tmp_path)[-1] == (b"cmd11", 11, 1)


def test_damage_before_the_tail_refuses_to_start(tmp_path):
    journal = DurableJournal(tmp_path, segment_bytes=200)
    _fill(journal, 2, 30)
    journal.close()
    first = sorted(tmp_path.glob("log-*.seg"))[0]
    data = bytearray(first.read_bytes())
    data[30] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptLog):
        DurableJournal(tmp_path)


def test_conflicting_tail_truncation_is_durable(tmp_path):
    journal = DurableJournal(tmp_path, segment_bytes=300)
    _fill(journal, 2, 40)
    journal.deleteEntriesFrom(20)  # list position 20 = index 21
    journal.add(b"new", 21, 2)
    journal.sync()
    journal.close()
    again = DurableJournal(tmp_path)
    assert again[-1] == (b"new", 21, 2) and len(again) == 21


def test_trim_after_snapshot_deletes_only_whole_old_segments(tmp_path):
    journal = DurableJournal(tmp_path, segment_bytes=300)
    _fill(journal, 2, 60)
    segments_before = journal.segment_files()
    journal.deleteEntriesTo(40)  # keep from index 41
    assert len(journal.segment_files()) < len(segments_before)
    assert journal[0][1] == 41
    journal.close()
    base = [(b"cmd39", 39, 1), (b"cmd40", 40, 1)]  # what a snapshot at 40 would provide
    again = DurableJournal(tmp_path, base=base)
    assert [e[1] for e in again] == list(range(39, 62))


def test_log_with_a_gap_after_the_snapshot_is_refused(tmp_path):
    journal = DurableJournal(tmp_path, segment_bytes=150)
    _fill(journal, 2, 40)
    journal.deleteEntriesTo(35)
    journal.close()
    with pytest.raises(CorruptLog):
        DurableJournal(tmp_path, base=[(b"x", 9, 1), (b"y", 10, 1)])


def test_reset_replaces_everything(tmp_path):
    journal = DurableJournal(tmp_path)
    _fill(journal, 2, 20)
    journal.reset([(b"a", 100, 3), (b"b", 101, 3)])
    journal.close()
    assert [e[1] for e in DurableJournal(tmp_path)] == [100, 101]


def test_snapshot_round_trip_and_damage_detection(tmp_path):
    header = SnapshotHeader(index=500, term=4, prev=(b"p", 499, 4), last=(b"\x00\xffl", 500, 4),
                            members=["a:1", "b:2"])
    path = tmp_path / "snap.bin"
    write_snapshot(path, header, b"store-bytes" * 100)
    got, body = read_snapshot(path)
    assert got == header and body == b"store-bytes" * 100
    data = bytearray(path.read_bytes())
    data[-20] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptSnapshot):
        read_snapshot(path)
    path.write_bytes(bytes(data[:40]))
    with pytest.raises(CorruptSnapshot):
        read_snapshot(path)
    assert read_snapshot(tmp_path / "missing.bin") is None


def test_snapshot_header_is_read_with_the_whole_files_crc_checked_in_chunks(tmp_path):
    header = SnapshotHeader(index=7, term=2, prev=(b"p", 6, 2), last=(b"l", 7, 2), members=["a:1"])
    path = tmp_path / "snap.bin"
    write_snapshot(path, header, b"0123456789" * 1000)
    assert read_snapshot_header(path, chunk_bytes=333) == header
    good = path.read_bytes()
    for position in (len(good) // 2, len(good) - 1):  # damage in the body, then in the CRC itself
        damaged = bytearray(good)
        damaged[position] ^= 1
        path.write_bytes(bytes(damaged))
        with pytest.raises(CorruptSnapshot):
            read_snapshot_header(path, chunk_bytes=333)
    for cut in (5, 30, len(good) - 2):
        path.write_bytes(good[:cut])
        with pytest.raises(CorruptSnapshot):
            read_snapshot_header(path)


def test_raft_frames_unpickle_without_globals():
    message = {"type": "append_entries", "term": 3, "entries": [(b"\x00cmd", 5, 3), (b"", 6, 3)],
               "serialized": (b"chunk", True, False), "commit_index": 4, "prevLogIdx": 4, "prevLogTerm": 3}
    assert safe_loads(pickle.dumps(message, 2)) == message

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    for proto in (2, 4, 5):
        with pytest.raises(pickle.UnpicklingError):
            safe_loads(pickle.dumps(Exploit(), proto))
    with pytest.raises(pickle.UnpicklingError):
        safe_loads(pickle.dumps({1, 2}, 2))  # sets need builtins.set: not allowed either


def test_decompression_is_bounded():
    bomb = zlib.compress(b"\0" * (10 * 1024 * 1024))
    with pytest.raises(ValueError):
        bounded_decompress(bomb, limit=1024 * 1024)
    assert bounded_decompress(zlib.compress(b"ok")) == b"ok"


def test_compaction_waits_until_the_log_is_worth_a_share_of_the_snapshot(tmp_path):
    """A big state is not rewritten for a little log: entries and bytes both gate a snapshot."""
    from raftqueue.raft.node import RaftNode, RaftSettings
    node = object.__new__(RaftNode)  # only the trigger rule: no Raft, no threads
    node._settings = RaftSettings(self_addr="a", peer_addrs=[], data_dir=tmp_path, compact_min_entries=100,
                                  compact_min_bytes=1_000, compact_growth=0.25)
    node._snap_dir = tmp_path
    (tmp_path / "snap-00000000000000000005.bin").write_bytes(b"x" * 10_000)
    node._snapshot_index, node._snapshot_size = 5, (-1, 0)
    assert not node._compaction_due(100, 2_499)   # enough entries, but the log is < 25% of the snapshot
    assert node._compaction_due(100, 2_500)
    assert node._compaction_due(10, 2_500)        # few entries but bytes past max(compact_min_bytes, 25%)
    assert not node._compaction_due(10, 2_400)
    node._snapshot_index = 6                      # after a new snapshot (none on disk here): entries rule
    (tmp_path / "snap-00000000000000000005.bin").unlink()
    assert node._compaction_due(100, 0) and not node._compaction_due(99, 999)


def _codec(cipher=None):
    """A SafeTcpConnection reduced to its frame codec: no socket, no poller."""
    from raftqueue.raft.transport import SafeTcpConnection
    conn = object.__new__(SafeTcpConnection)
    conn.sendRandKey = conn.recvRandKey = None
    conn.encryptor = object() if cipher else None
    conn.frame_cipher = cipher
    conn._TcpConnection__writeBuffer = b""
    conn._TcpConnection__readBuffer = b""
    conn._TcpConnection__trySendBuffer = lambda: None
    conn.disconnected = False
    conn.disconnect = lambda: setattr(conn, "disconnected", True)
    return conn


def _take_frame(sender) -> bytes:
    frame, sender._TcpConnection__writeBuffer = sender._TcpConnection__writeBuffer, b""
    return frame


def _deliver(frame: bytes, receiver):
    receiver._TcpConnection__readBuffer += frame
    return receiver._TcpConnection__processParseMessage()


@pytest.mark.parametrize("size", [10, 100_000])
def test_frames_without_a_secret_are_plain_pickle_and_zlib_frames_are_still_read(size):
    import pickle
    import zlib
    sender, receiver = _codec(), _codec()
    message = {"type": "append_entries", "entries": [(b"x" * size, 7, 2)], "term": 2}
    sender.send(message)
    frame = _take_frame(sender)
    assert frame[4:5] == b"\x80"  # pickle PROTO: never compressed (zlib cost more CPU than it saved wire)
    assert _deliver(frame, receiver) == message and receiver._TcpConnection__readBuffer == b""
    old = zlib.compress(pickle.dumps(message, protocol=5), 1)  # what an older member sends
    assert _deliver(len(old).to_bytes(4, "little") + old, receiver) == message


def test_sealed_frames_follow_the_handshake_and_refuse_replays_reordering_and_other_secrets():
    """With a secret: the first frame goes under the master key, the rest under the per-direction key derived
    from the session key the receiver picked, with a counter nonce, so a replayed or reordered frame fails."""
    from raftqueue.raft.frame_cipher import FrameCipher
    cipher = FrameCipher("s3cret")
    out, inc = _codec(cipher), _codec(cipher)
    # The library's handshake: the initiator sends the key it will receive under, the acceptor answers with its.
    out.recvRandKey = os.urandom(32)
    out.send(out.recvRandKey)
    hello = _take_frame(out)
    inc.sendRandKey = _deliver(hello, inc)
    assert inc.sendRandKey == out.recvRandKey
    inc.recvRandKey = os.urandom(32)
    inc.send(inc.recvRandKey)
    out.sendRandKey = _deliver(_take_frame(inc), out)
    assert out.sendRandKey == inc.recvRandKey
    frames = []
    for n in range(3):
        out.send({"type": "append_entries", "n": n, "entries": [(b"y" * 5000, n, 1)]})
        frames.append(_take_frame(out))
    assert b"y" * 100 not in b"".join(frames)  # encrypted
    assert _deliver(frames[0], inc)["n"] == 0
    assert _deliver(frames[2], inc) is None and inc.disconnected  # frame 1 skipped: the counter disagrees
    inc2 = _codec(cipher)
    inc2.recvRandKey = inc.recvRandKey
    assert _deliver(frames[0], inc2)["n"] == 0
    assert _deliver(frames[0], inc2) is None and inc2.disconnected  # a replay
    other = _codec(FrameCipher("another secret"))
    assert _deliver(hello, other) is None and other.disconnected


def test_no_frame_goes_out_on_a_connection_before_its_session_keys_are_swapped():
    """An outgoing connection is CONNECTED as soon as TCP is up; a frame sent before the key exchange travels
    without the session key and the peer drops the whole connection for it."""
    import types

    from pysyncobj.tcp_connection import CONNECTION_STATE

    from raftqueue.raft.transport import HardenedTransport

    class Conn:
        state = CONNECTION_STATE.CONNECTED
        sendRandKey = None

        def __init__(self) -> None:
            self.sent: list = []

        def send(self, message) -> None:
            self.sent.append(message)

    class Node:
        address = "127.0.0.1:1"

    node, conn = Node(), Conn()
    transport = HardenedTransport.__new__(HardenedTransport)
    transport._syncObj = types.SimpleNamespace(encryptor=object(), blocked_peers=set())
    transport._connections = {node: conn}
    transport._send_random_sleep_duration = 0
    message = {"type": "append_entries", "term": 1}
    assert transport.send(node, message) is False and conn.sent == []
    conn.sendRandKey = os.urandom(32)  # the peer's key arrived: the exchange is done
    assert transport.send(node, message) is True and conn.sent == [message]


def test_a_snapshot_whose_last_entry_the_log_holds_is_dropped_without_loading_it(tmp_path, caplog):
    """D7 (Raft §7): a follower that already holds the snapshot's last entry keeps its log and its state. It
    decides that from the header, so a snapshot of a big state does not stall the node while it is read."""
    import logging

    from raftqueue.clock import Clock
    from raftqueue.localcluster import free_ports
    from raftqueue.raft.node import RaftNode, RaftSettings
    from raftqueue.replicated_store import ReplicatedStore

    own, peer = free_ports(2)
    state = ReplicatedStore(Clock(0), retention_ms=60_000)
    node = RaftNode(RaftSettings(self_addr=f"127.0.0.1:{own}", peer_addrs=[f"127.0.0.1:{peer}"],
                                 data_dir=tmp_path, fsync=False), state)
    try:
        journal = node._journal
        for index in range(journal[-1][1] + 1, 11):
            journal.add(b"\x00entry%d" % index, index, 1)
        header = SnapshotHeader(index=6, term=1, prev=journal[4], last=journal[5])
        incoming = tmp_path / "snapshot.incoming"
        write_snapshot(incoming, header, b"not a store snapshot: it must never be read", fsync=False)
        caplog.set_level(logging.INFO, logger="raftqueue.raft")
        acks: list = []
        node._SyncObj__sendNextNodeIdx = lambda peer, **kw: acks.append(kw)
        node._install_incoming_snapshot(node._SyncObj__otherNodes.copy().pop(), leader_commit=6)
        # only the snapshot's entries are known to match: entries 7-10 may be another term's (Raft §5.3)
        assert acks == [{"nextNodeIdx": 7, "success": True}]
        assert [entry[1] for entry in journal][-1] == 10 and journal[5][1] == 6  # the whole log is kept
        assert not incoming.exists() and state.state_index == 0
        assert node.commit_index == 6
        assert "not needed" in caplog.text
    finally:
        node._doDestroy()


def test_write_paced_writes_everything_and_flushes_each_step(tmp_path, monkeypatch):
    from raftqueue.raft import files
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(files.os, "fdatasync", lambda fd: (synced.append(os.fstat(fd).st_size), real(fd)))
    data = bytes(range(256)) * 41  # 10,496 bytes: steps of 4,096 -> flushed at 4,096, 8,192, 10,496
    with open(tmp_path / "f", "wb") as f:
        files.write_paced(f, data, fsync=True, step=4096)
    assert (tmp_path / "f").read_bytes() == data
    assert synced == [4096, 8192, 10496]
    with open(tmp_path / "g", "wb") as f:
        files.write_paced(f, data, fsync=False, step=4096)
    assert (tmp_path / "g").read_bytes() == data and len(synced) == 3


def test_write_paced_keeps_to_its_rate(tmp_path):
    import time

    from raftqueue.raft import files
    started = time.monotonic()
    with open(tmp_path / "f", "wb") as f:
        files.write_paced(f, b"x" * 40_000, fsync=False, step=10_000, bytes_per_s=200_000)
    assert time.monotonic() - started >= 0.19  # 40 KB at 200 KB/s: the last step is due at 0.2 s
    assert (tmp_path / "f").stat().st_size == 40_000


def test_connection_reads_frames_larger_than_its_buffer_and_drops_the_connection_at_eof():
    """SafeTcpConnection reads into one buffer it keeps (not a new 1 MB object per recv, as the library did):
    frames bigger than that buffer and many small ones back to back come out whole and in order, over a real
    socket pair and the library's poller; the peer closing its end disconnects us."""
    import socket as socket_mod

    from pysyncobj.poller import createPoller
    from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection

    from raftqueue.raft.transport import SafeTcpConnection, _RECV_CHUNK

    poller = createPoller("auto")
    received: list = []
    dropped: list = []
    left, right = socket_mod.socketpair()
    ends = []
    for sock, on_message, on_gone in ((left, None, None), (right, received.append, lambda: dropped.append(1))):
        sock.setblocking(False)
        conn = TcpConnection(poller, onMessageReceived=on_message, onDisconnected=on_gone, socket=sock,
                             timeout=30.0, sendBufferSize=2 ** 16, recvBufferSize=2 ** 16)
        conn.__class__ = SafeTcpConnection
        ends.append(conn)
    sender, receiver = ends
    big = {"type": "append_entries", "entries": [(os.urandom(3 * _RECV_CHUNK + 123), 1, 1)]}
    small = [{"type": "append_entries", "n": n} for n in range(200)]
    sender.send(big)
    for message in small:
        sender.send(message)
    deadline = time.monotonic() + 20
    while len(received) < 1 + len(small) and time.monotonic() < deadline:
        poller.poll(0.05)
    assert received == [big, *small]
    assert receiver.state == CONNECTION_STATE.CONNECTED and not dropped
    left.close()
    deadline = time.monotonic() + 5
    while not dropped and time.monotonic() < deadline:
        poller.poll(0.05)
    assert dropped and receiver.state == CONNECTION_STATE.DISCONNECTED
