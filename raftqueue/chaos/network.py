"""Where the chaos cluster's nodes live, and how links between them are cut.

`NetnsNetwork` (needs root and `ip`): every node gets its own network namespace and address, a veth link to
every other node and one to the host (where the harness's clients are). Cutting a link between two nodes
replaces the route to the other's address with a `blackhole` route on both sides: packets vanish as in a real
partition, while clients can still reach both nodes. Only `ip` (iproute2) is used.

`LoopbackNetwork`: nodes on 127.0.0.1; a cut is asked of the nodes through `POST /debug/partition`, which
drops the Raft messages inside the process. Used where namespaces are not possible.
"""
from __future__ import annotations

import itertools
import os
import subprocess
from typing import Iterable

import aiohttp
import orjson


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class NetnsNetwork:
    mode = "netns"

    def __init__(self, size: int, tag: str | None = None) -> None:
        self.size = size
        self.tag = tag or f"{os.getpid() % 10000:04d}"
        octet = 200 + os.getpid() % 50
        self.net = f"10.{octet}"
        self.namespaces = [f"rq{self.tag}n{i}" for i in range(size)]
        self.cut_links: set[frozenset[int]] = set()
        self._pairs = {frozenset(p): n for n, p in enumerate(itertools.combinations(range(size), 2))}

    @staticmethod
    def available() -> bool:
        if os.geteuid() != 0:
            return False
        probe = f"rqprobe{os.getpid() % 100000}"
        try:
            if _ip("netns", "add", probe, check=False).returncode != 0:
                return False
            _ip("netns", "del", probe, check=False)
            return True
        except FileNotFoundError:
            return False

    def host(self, i: int) -> str:
        """The node's own address (bound by its HTTP and Raft servers)."""
        return f"{self.net}.0.{i + 1}"

    def wrapper(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[i]]

    def _pair_addr(self, i: int, j: int) -> str:
        """Address of node i's end of the i-j link (a /30 per pair)."""
        n = self._pairs[frozenset((i, j))]
        return f"{self.net}.{100 + n // 60}.{(n % 60) * 4 + (1 if i < j else 2)}"

    def setup(self) -> None:
        self.teardown()
        for i, ns in enumerate(self.namespaces):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{self.host(i)}/32", "dev", "lo")
            # the link to the host, where the clients are
            host_if, ns_if = f"rq{self.tag}h{i}", "host0"
            _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", ns)
            _ip("addr", "add", f"{self.net}.{50 + i}.1/30", "dev", host_if)
            _ip("link", "set", host_if, "up")
            _ip("-n", ns, "addr", "add", f"{self.net}.{50 + i}.2/30", "dev", ns_if)
            _ip("-n", ns, "link", "set", ns_if, "up")
            _ip("route", "replace", f"{self.host(i)}/32", "via", f"{self.net}.{50 + i}.2")
            _ip("-n", ns, "route", "add", f"{self.net}.{50 + i}.1/32", "dev", ns_if)
        for i, j in itertools.combinations(range(self.size), 2):
            a, b = f"rq{self.tag}p{i}{j}", f"rq{self.tag}p{j}{i}"
            _ip("link", "add", a, "type", "veth", "peer", "name", b)
            _ip("link", "set", a, "netns", self.namespaces[i])
            _ip("link", "set", b, "netns", self.namespaces[j])
            for me, other, dev in ((i, j, a), (j, i, b)):
                ns = self.namespaces[me]
                _ip("-n", ns, "addr", "add", f"{self._pair_addr(me, other)}/30", "dev", dev)
                _ip("-n", ns, "link", "set", dev, "up")
            self._route(i, j)
            self._route(j, i)

    def _route(self, i: int, j: int) -> None:
        dev = f"rq{self.tag}p{i}{j}"  # node i's end of the i-j link
        _ip("-n", self.namespaces[i], "route", "replace", f"{self.host(j)}/32", "via", self._pair_addr(j, i),
            "dev", dev, "src", self.host(i))

    def cut(self, pairs: Iterable[tuple[int, int]]) -> None:
        for i, j in pairs:
            for me, other in ((i, j), (j, i)):
                _ip("-n", self.namespaces[me], "route", "replace", "blackhole", f"{self.host(other)}/32")
            self.cut_links.add(frozenset((i, j)))

    async def apply_cut(self, pairs: list[tuple[int, int]], urls: list[str]) -> None:
        self.cut(pairs)

    async def heal(self, urls: list[str]) -> None:
        for link in list(self.cut_links):
            i, j = sorted(link)
            self._route(i, j)
            self._route(j, i)
        self.cut_links.clear()

    def teardown(self) -> None:
        for ns in self.namespaces:
            _ip("netns", "del", ns, check=False)
        for i in range(self.size):
            _ip("link", "del", f"rq{self.tag}h{i}", check=False)
            _ip("route", "del", f"{self.host(i)}/32", check=False)


class LoopbackNetwork:
    """Nodes on 127.0.0.1; partitions through each node's /debug/partition route (Raft messages only)."""

    mode = "in-process"

    def __init__(self, size: int) -> None:
        self.size = size
        self.cut_links: set[frozenset[int]] = set()
        self.headers: dict[str, str] = {}  # the admin key's Authorization header, set by the driver

    def host(self, i: int) -> str:
        return "127.0.0.1"

    def wrapper(self, i: int) -> list[str]:
        return []

    def setup(self) -> None:
        pass

    def teardown(self) -> None:
        pass

    async def _push(self, urls: list[str]) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
            for i, url in enumerate(urls):
                drop = sorted(f"n{j + 1}" for link in self.cut_links if i in link for j in link if j != i)
                try:
                    async with session.post(f"{url}/debug/partition", data=orjson.dumps({"drop": drop}),
                                            headers=self.headers) as r:
                        await r.read()
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass  # a dead or paused node: it is told again at the next change

    async def apply_cut(self, pairs: list[tuple[int, int]], urls: list[str]) -> None:
        for i, j in pairs:
            self.cut_links.add(frozenset((i, j)))
        await self._push(urls)

    async def heal(self, urls: list[str]) -> None:
        self.cut_links.clear()
        await self._push(urls)
