"""A cluster of `raft_harness` processes (real Replicas on 127.0.0.1) driven over their control ports."""
from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import orjson

from tests.support.procs import REPO, NodeProcess, free_ports, python_module_argv

FAST_RAFT = {}  # the replica's defaults are the tuned ones under test


class HarnessCluster:
    def __init__(self, root: Path, size: int = 3, store: str = "kv", secret: str | None = "test-secret",
                 raft: dict | None = None, fsync: bool = True, inject: dict | None = None,
                 disable: list[str] | None = None) -> None:
        self.root = root
        self.size = size
        ports = free_ports(size * 3)
        self.raft_ports = ports[:size]
        self.control_ports = ports[size:2 * size]
        self.ids = [f"n{i + 1}" for i in range(size)]
        members = [f"{self.ids[i]}=127.0.0.1:{self.raft_ports[i]}=http://127.0.0.1:{ports[2 * size + i]}"
                   for i in range(size)]
        self.nodes: list[NodeProcess] = []
        for i in range(size):
            args = ["--id", self.ids[i], "--data", str(root / self.ids[i]), "--control-port",
                    str(self.control_ports[i])]
            if store == "kv":
                args += ["--store", "tests.support.kvstore:KVStore"]
            for m in members:
                args += ["--member", m]
            if secret:
                args += ["--secret", secret]
            if not fsync:
                args.append("--no-fsync")
            for key, value in (raft or {}).items():
                args += ["--raft", f"{key}={value}"]
            for key, value in (inject or {}).items():
                args += ["--inject", f"{key}={value}"]
            for fix in disable or []:
                args += ["--disable", fix]
            args += ["--seed", str(1000 + i)]
            self.nodes.append(NodeProcess(self.ids[i], python_module_argv("tests.support.raft_harness", *args),
                                          root / f"{self.ids[i]}.log", env={"PYTHONPATH": str(REPO)}, cwd=REPO))
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "HarnessCluster":
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        for node in self.nodes:
            node.start()
        return self

    async def __aexit__(self, *exc) -> None:
        for node in self.nodes:
            node.kill()
        if self.session is not None:
            await self.session.close()

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.control_ports[i]}"

    async def status(self, i: int, digest: bool = True) -> dict | None:
        assert self.session is not None
        try:
            async with self.session.get(f"{self.url(i)}/status", params={"digest": "1" if digest else "0"},
                                        timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return orjson.loads(await resp.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return None

    async def wait_leader(self, timeout: float = 15.0, exclude: set[int] | None = None) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i in range(self.size):
                if exclude and i in exclude or not self.nodes[i].alive():
                    continue
                st = await self.status(i, digest=False)
                if st and st["role"] == "leader" and st.get("ready"):
                    return i
            await asyncio.sleep(0.02)
        raise TimeoutError("no ready leader")

    async def propose(self, i: int, commands: list[dict], timeout: float = 5.0) -> dict:
        """{"index", "results"} or {"error"}; raises on connection errors."""
        assert self.session is not None
        async with self.session.post(f"{self.url(i)}/propose",
                                     data=orjson.dumps({"commands": commands, "timeout": timeout}),
                                     timeout=aiohttp.ClientTimeout(total=timeout + 5)) as resp:
            return orjson.loads(await resp.read())

    async def isolate(self, i: int, peers: list[int], seconds: float) -> None:
        """Node i drops all traffic with `peers` for `seconds` (a one-sided cut, both directions)."""
        assert self.session is not None
        body = {"peers": [self.ids[p] for p in peers], "seconds": seconds}
        async with self.session.post(f"{self.url(i)}/isolate", data=orjson.dumps(body)) as resp:
            assert resp.status == 200

    async def keys(self, i: int) -> dict:
        assert self.session is not None
        async with self.session.get(f"{self.url(i)}/keys") as resp:
            return orjson.loads(await resp.read())

    async def wait_converged(self, timeout: float = 20.0, nodes: list[int] | None = None) -> list[dict]:
        """Until every live node reports the same applied index and digest; returns their statuses."""
        nodes = nodes if nodes is not None else [i for i in range(self.size) if self.nodes[i].alive()]
        deadline = time.monotonic() + timeout
        last: list = []
        while time.monotonic() < deadline:
            last = [await self.status(i) for i in nodes]
            if all(last) and len({(s["applied_index"], s["state_digest"]) for s in last}) == 1 \
                    and last[0]["applied_index"] >= max(s["commit_index"] for s in last):
                return last
            await asyncio.sleep(0.1)
        raise AssertionError(f"replicas did not converge: {[(s or {}).get('applied_index') for s in last]} "
                             f"{[(s or {}).get('state_digest', '')[:12] for s in last]}")
