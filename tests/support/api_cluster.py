"""A real 3-node raftqueue cluster (`raftqueue serve` processes) on free ports, and a small HTTP client."""
from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import aiohttp
import orjson

from raftqueue.localcluster import LocalCluster
from tests.support.procs import REPO, free_ports


def make_cluster(root: Path, nodes: int = 3, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, node_args: dict[int, list[str]] | None = None,
                 scheme: str = "http", initial_members: int | None = None) -> LocalCluster:
    ports = free_ports(2 * nodes)
    cluster = LocalCluster(root, nodes=nodes, http_ports=ports[:nodes], raft_ports=ports[nodes:],
                           extra_args=extra_args, env={"PYTHONPATH": str(REPO), **(env or {})},
                           node_args=node_args, scheme=scheme, initial_members=initial_members)
    for node in cluster.nodes:
        node.cwd = REPO
    return cluster


@contextlib.contextmanager
def running_cluster(root: Path, **options):
    """A started, ready cluster for a module-scoped fixture (make_cluster options); stopped afterwards."""
    cluster = make_cluster(root, **options)
    cluster.start_all()
    try:
        asyncio.run(cluster.wait_ready(timeout=60))
        yield cluster
    finally:
        cluster.stop_all()


@contextlib.asynccontextmanager
async def started_cluster(root: Path, **options):
    """A started, ready cluster and an admin `Api` for one test (make_cluster options); stopped afterwards."""
    cluster = make_cluster(root, **options)
    cluster.start_all()
    try:
        await cluster.wait_ready()
        async with Api(cluster) as api:
            yield cluster, api
    finally:
        cluster.stop_all()


class Api:
    """JSON over HTTP against the cluster's nodes. Returns (status, body, headers); never raises on 4xx/5xx."""

    def __init__(self, cluster: LocalCluster, timeout: float = 15.0, key: str | None = "admin") -> None:
        self.cluster = cluster
        self.key = cluster.admin_key if key == "admin" else key
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))

    async def close(self) -> None:
        await self.session.close()

    async def __aenter__(self) -> "Api":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def request(self, node: int, method: str, path: str, body=None, *, raw: bytes | None = None,
                      headers: dict | None = None, params: dict | None = None, timeout: float | None = None):
        url = self.cluster.urls[node] + path
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        hdrs = {"Content-Type": "application/json"} if data is not None else {}
        if self.key:
            hdrs["Authorization"] = f"Bearer {self.key}"
        hdrs.update(headers or {})
        kwargs = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout else {}
        async with self.session.request(method, url, data=data, headers=hdrs, params=params, **kwargs) as resp:
            content = await resp.read()
            try:
                parsed = orjson.loads(content) if content else None
            except orjson.JSONDecodeError:
                parsed = content.decode(errors="replace")
            return resp.status, parsed, resp.headers

    async def post(self, node: int, path: str, body=None, **kw):
        return await self.request(node, "POST", path, body, **kw)

    async def get(self, node: int, path: str, **kw):
        return await self.request(node, "GET", path, **kw)

    async def cluster_status(self, node: int, digest: bool = True) -> dict | None:
        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
            status, body, _ = await self.get(node, "/cluster", params={"digest": "1" if digest else "0"}, timeout=3)
            if status == 200:
                return body
        return None

    async def leader(self, timeout: float = 20.0, exclude: set[int] | None = None) -> int:
        return await self.cluster.leader(self.session, timeout=timeout, exclude=exclude)

    async def wait_converged(self, timeout: float = 30.0, nodes: list[int] | None = None) -> list[dict]:
        nodes = nodes if nodes is not None else [i for i in range(self.cluster.size) if self.cluster.nodes[i].alive()]
        deadline = time.monotonic() + timeout
        statuses: list = []
        while time.monotonic() < deadline:
            statuses = [await self.cluster_status(i) for i in nodes]
            if all(statuses) and len({(s["applied_index"], s["state_digest"]) for s in statuses}) == 1 \
                    and statuses[0]["applied_index"] >= max(s["commit_index"] for s in statuses):
                return statuses
            await asyncio.sleep(0.1)
        raise AssertionError("replicas did not converge: "
                             f"{[(s or {}).get('applied_index') for s in statuses]} "
                             f"{[(s or {}).get('state_digest', '')[:12] for s in statuses]}")
