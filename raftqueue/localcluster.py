"""A local N-node cluster as child processes on 127.0.0.1: used by `raftqueue cluster`, the drill, the
benchmark, the chaos harness and the integration tests.

Node i serves HTTP on `http_ports[i]` and Raft on `raft_ports[i]` (by default base_port+i and
base_port+1000+i), keeps its data in `<data_dir>/n<i+1>` and its log in `<data_dir>/logs/n<i+1>.log`. The
cluster secret and the bootstrap admin key are generated once, kept in `<data_dir>/cluster.secret` and
`<data_dir>/admin.key` (mode 0600), and given to the children through the environment, never on a command
line. Only processes started here are ever signalled.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson


@dataclass
class NodeProcess:
    """One child process: how to start it, and the running process if any."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen | None = None
    starts: int = 0

    def start(self) -> None:
        if self.alive():
            raise RuntimeError(f"{self.name} is already running")
        self.starts += 1
        env = dict(os.environ)
        env.update(self.env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} at {time.strftime('%Y-%m-%d %H:%M:%S')} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (after SIGCONT, in case it is paused), wait, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now on 127.0.0.1 (held open together so they are distinct)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def load_or_create_secret(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


class LocalCluster:
    def __init__(self, data_dir: str | os.PathLike[str], nodes: int = 3, base_port: int = 8081,
                 http_ports: list[int] | None = None, raft_ports: list[int] | None = None,
                 extra_args: list[str] | None = None, node_args: dict[int, list[str]] | None = None,
                 env: dict[str, str] | None = None, python: str = sys.executable,
                 hosts: list[str] | None = None, wrappers: list[list[str]] | None = None,
                 scheme: str = "http", initial_members: int | None = None) -> None:
        """`initial_members`: only the first N nodes form the cluster; each later one starts with the nodes
        before it and itself as peers, ready to be added (in order) with POST /cluster/members."""
        self.scheme = scheme
        self.client_ssl = None  # an ssl.SSLContext trusting the nodes' certificate, for https clusters
        self.data_dir = Path(data_dir).resolve()
        self.size = nodes
        self.http_ports = http_ports or [base_port + i for i in range(nodes)]
        self.raft_ports = raft_ports or [base_port + 1000 + i for i in range(nodes)]
        self.ids = [f"n{i + 1}" for i in range(nodes)]
        self.hosts = hosts or ["127.0.0.1"] * nodes
        self.secret_path = self.data_dir / "cluster.secret"
        secret = load_or_create_secret(self.secret_path)
        self.admin_key_path = self.data_dir / "admin.key"
        self.admin_key_created = not self.admin_key_path.exists()
        self.admin_key = load_or_create_secret(self.admin_key_path)
        peers = [f"{self.ids[i]}={self.hosts[i]}:{self.raft_ports[i]}={scheme}://{self.hosts[i]}:{self.http_ports[i]}"
                 for i in range(nodes)]
        self.nodes: list[NodeProcess] = []
        for i in range(nodes):
            argv = [*(wrappers[i] if wrappers else []), python, "-m", "raftqueue", "serve", "--node-id", self.ids[i],
                    "--http-addr", f"{self.hosts[i]}:{self.http_ports[i]}",
                    "--data-dir", str(self.data_dir / self.ids[i])]
            initial = initial_members or nodes
            for peer in peers[:max(initial, i + 1)]:
                argv += ["--peer", peer]
            argv += list(extra_args or []) + list((node_args or {}).get(i, []))
            node_env = {"RAFTQUEUE_CLUSTER_SECRET": secret, "RAFTQUEUE_ADMIN_KEY": self.admin_key, **(env or {})}
            self.nodes.append(NodeProcess(self.ids[i], argv, self.data_dir / "logs" / f"{self.ids[i]}.log", node_env))

    def peer_spec(self, i: int) -> dict[str, str]:
        """Node i as POST /cluster/members wants it."""
        return {"id": self.ids[i], "raft_addr": f"{self.hosts[i]}:{self.raft_ports[i]}", "http_addr": self.urls[i]}

    @property
    def urls(self) -> list[str]:
        return [f"{self.scheme}://{host}:{port}" for host, port in zip(self.hosts, self.http_ports)]

    def start_all(self) -> None:
        for node in self.nodes:
            node.start()

    def stop_all(self, timeout: float = 15.0) -> None:
        for node in self.nodes:
            node.signal(signal.SIGCONT)
            node.signal(signal.SIGTERM)
        for node in self.nodes:
            node.terminate(timeout)

    def kill_all(self) -> None:
        for node in self.nodes:
            node.signal(signal.SIGKILL)
        for node in self.nodes:
            node.kill()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    async def cluster_status(self, i: int, session: aiohttp.ClientSession, digest: bool = False) -> dict | None:
        try:
            async with session.get(f"{self.urls[i]}/cluster", params={"digest": "1" if digest else "0"},
                                   headers=self.auth, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                if resp.status != 200:
                    return None
                return orjson.loads(await resp.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, orjson.JSONDecodeError):
            return None

    async def wait_ready(self, timeout: float = 60.0, nodes: list[int] | None = None) -> None:
        """Until every (given) node answers /ready with 200."""
        wanted = nodes if nodes is not None else list(range(self.size))
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self.client_ssl or True)) as session:
            pending = set(wanted)
            while pending:
                for i in list(pending):
                    if not self.nodes[i].alive():
                        raise RuntimeError(f"{self.ids[i]} exited; see {self.nodes[i].log_path}")
                    try:
                        async with session.get(f"{self.urls[i]}/ready", timeout=aiohttp.ClientTimeout(total=2)) as r:
                            if r.status == 200:
                                pending.discard(i)
                    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                        pass
                if pending:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"nodes not ready after {timeout:.0f} s: "
                                           f"{[self.ids[i] for i in sorted(pending)]}")
                    await asyncio.sleep(0.05)

    async def leader(self, session: aiohttp.ClientSession, timeout: float = 30.0,
                     exclude: set[int] | None = None) -> int:
        """Index of the node that says it is the ready leader."""
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self.size):
                if exclude and i in exclude or not self.nodes[i].alive():
                    continue
                status = await self.cluster_status(i, session)
                if status and status.get("role") == "leader" and status.get("ready"):
                    return i
            if time.monotonic() > deadline:
                raise TimeoutError("no leader")
            await asyncio.sleep(0.02)
