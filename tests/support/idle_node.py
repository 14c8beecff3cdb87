"""A real RaftNode that is never started: unit tests tick it, or call its overrides, by hand."""
from __future__ import annotations

import socket
from pathlib import Path

from raftqueue.raft.node import RaftNode, RaftSettings


class _NoState:
    def apply_entry(self, blob: bytes, index: int) -> list:
        return []

    def snapshot_body(self) -> bytes:
        return b""

    def restore_body(self, body: bytes, index: int) -> None:
        pass

    def housekeeping(self, is_leader: bool) -> list[bytes]:
        return []


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def idle_node(data_dir: Path, **settings) -> RaftNode:
    """Member of a 3-node cluster whose peers do not exist; one is marked connected, so the library is
    willing to start an election. Call `close_idle_node` at the end."""
    ports = _free_ports(3)
    addrs = [f"127.0.0.1:{p}" for p in ports]
    raft = RaftNode(RaftSettings(self_addr=addrs[0], peer_addrs=addrs[1:], data_dir=data_dir, **settings),
                    _NoState())
    raft.doTick(0)  # binds the transport
    raft._SyncObj__connectedNodes.add(next(iter(raft._SyncObj__otherNodes)))
    return raft


def close_idle_node(raft: RaftNode) -> None:
    raft._SyncObj__connectedNodes.clear()
    raft._doDestroy()
