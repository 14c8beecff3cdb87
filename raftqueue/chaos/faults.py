"""The fault schedule (made from the seed, printed so a run can be replayed) and the injector.

Kinds: kill (kill -9, restart after the hold), pause (SIGSTOP longer than an election timeout, then SIGCONT),
partition_leader (the leader cut from every other node), partition_split (a minority cut from the majority),
partition_bridge (two nodes cut from each other, both still reaching the rest), clock_skew (the leader's
clock jumped forward or back, then reset), kill_all (every node at once, then restart), replace (a member
removed with DELETE /cluster/members, killed, its data directory wiped, started empty and added back with
POST /cluster/members: replacing a machine as docs/operations.md says). Targets "leader" or "random" are
resolved when the fault fires; the log records the node actually hit.
"""
from __future__ import annotations

import asyncio
import random
import shutil
import time
from dataclasses import dataclass

import aiohttp
import orjson

from raftqueue.chaos.history import History
from raftqueue.localcluster import LocalCluster

KINDS = ("kill", "pause", "partition_leader", "partition_split", "partition_bridge", "clock_skew", "kill_all",
         "replace")
MEMBER_CALL_S = 60.0  # how long a membership change is retried (409 while another one is applied, elections)


@dataclass
class Planned:
    t: float          # seconds after the run starts
    fault: str
    target: str       # leader | random | all | minority
    hold: float       # seconds before healing
    skew_ms: int = 0

    def describe(self) -> dict:
        out = {"t": round(self.t, 2), "fault": self.fault, "target": self.target, "hold": round(self.hold, 2)}
        if self.skew_ms:
            out["skew_ms"] = self.skew_ms
        return out


def make_schedule(seed: int, duration_s: float, kinds: list[str], mean_gap_s: float = 4.0,
                  start_s: float = 2.0) -> list[Planned]:
    """Faults one after another (each healed before the next starts), kinds in a shuffled rotation."""
    rng = random.Random(seed)
    plan: list[Planned] = []
    t = start_s
    rotation: list[str] = []
    while True:
        if not rotation:
            rotation = list(kinds)
            rng.shuffle(rotation)
        fault = rotation.pop()
        hold = {"kill": rng.uniform(0.5, 2.0), "pause": rng.uniform(1.0, 2.5), "kill_all": rng.uniform(0.3, 1.0),
                "clock_skew": rng.uniform(2.0, 4.0)}.get(fault, rng.uniform(1.0, 3.0))
        if t + hold > duration_s - 1.0:
            break
        target = {"kill": rng.choice(["leader", "random"]), "pause": rng.choice(["leader", "random"]),
                  "partition_leader": "leader", "partition_split": "minority", "partition_bridge": "random",
                  "clock_skew": "leader", "kill_all": "all", "replace": rng.choice(["leader", "random"])}[fault]
        skew = rng.choice([-1, 1]) * rng.randrange(2_000, 8_000) if fault == "clock_skew" else 0
        plan.append(Planned(t, fault, target, hold, skew))
        t += hold + rng.uniform(0.5 * mean_gap_s, 1.5 * mean_gap_s)
    return plan


class Injector:
    def __init__(self, cluster: LocalCluster, network, history: History, seed: int) -> None:
        self.cluster = cluster
        self.network = network
        self.history = history
        self.rng = random.Random(seed + 1)
        self.session: aiohttp.ClientSession | None = None

    async def leader(self) -> int | None:
        assert self.session is not None
        try:
            return await self.cluster.leader(self.session, timeout=5.0)
        except TimeoutError:
            return None

    def _alive(self) -> list[int]:
        return [i for i, node in enumerate(self.cluster.nodes) if node.alive()]

    async def _pick(self, target: str) -> tuple[int, bool]:
        leader = await self.leader()
        if target == "leader" and leader is not None:
            return leader, True
        node = self.rng.choice(self._alive())
        return node, node == leader

    async def run(self, planned: Planned) -> None:
        cluster, ids = self.cluster, self.cluster.ids
        fault = planned.fault
        if fault == "kill":
            node, is_leader = await self._pick(planned.target)
            cluster.nodes[node].kill()
            self.history.fault("kill", ids[node], leader=is_leader, signal="SIGKILL")
            await asyncio.sleep(planned.hold)
            cluster.nodes[node].start()
            self.history.fault("restart", ids[node])
        elif fault == "pause":
            node, is_leader = await self._pick(planned.target)
            cluster.nodes[node].pause()
            self.history.fault("pause", ids[node], leader=is_leader, signal="SIGSTOP")
            await asyncio.sleep(planned.hold)
            cluster.nodes[node].resume()
            self.history.fault("resume", ids[node])
        elif fault.startswith("partition"):
            leader = await self.leader()
            everyone = list(range(cluster.size))
            if fault == "partition_leader":
                side = [leader if leader is not None else self.rng.randrange(cluster.size)]
            elif fault == "partition_split":
                side = self.rng.sample(everyone, (cluster.size - 1) // 2)
            else:  # bridge: two nodes lose each other, both still see the rest
                pair = self.rng.sample(everyone, 2)
                cuts = [tuple(pair)]
                side = pair
            if fault != "partition_bridge":
                cuts = [(a, b) for a in side for b in everyone if b not in side]
            await self.network.apply_cut(cuts, cluster.urls)
            self.history.fault("partition", ",".join(ids[i] for i in side), leader=leader in side, kind=fault,
                               cuts=[[ids[a], ids[b]] for a, b in cuts], mode=self.network.mode)
            await asyncio.sleep(planned.hold)
            await self.network.heal(cluster.urls)
            self.history.fault("heal", None)
        elif fault == "clock_skew":
            node, is_leader = await self._pick("leader")
            await self._clock(node, planned.skew_ms)
            self.history.fault("clock_skew", ids[node], leader=False, offset_ms=planned.skew_ms)
            await asyncio.sleep(planned.hold)
            await self._clock(node, 0)
            self.history.fault("clock_reset", ids[node])
        elif fault == "replace":
            node, is_leader = await self._pick(planned.target)
            await self._replace(node, is_leader, planned.hold)
        elif fault == "kill_all":
            cluster.kill_all()
            self.history.fault("kill_all", None, leader=True)
            await asyncio.sleep(planned.hold)
            cluster.start_all()
            self.history.fault("restart_all", None)

    async def _replace(self, node: int, is_leader: bool, hold: float) -> None:
        cluster, ids = self.cluster, self.cluster.ids
        others = [i for i in self._alive() if i != node]
        removed = await self._member_call("DELETE", f"/cluster/members/{ids[node]}", None, others, (200, 404))
        self.history.fault("remove_member", ids[node], leader=is_leader, ok=removed)
        if not removed:  # still a member: wiping it would lose what it acknowledged. Leave it be.
            print(f"  replace: could not remove {ids[node]} within {MEMBER_CALL_S:.0f} s; left as it is", flush=True)
            return
        cluster.nodes[node].kill()
        shutil.rmtree(cluster.data_dir / ids[node], ignore_errors=True)
        await asyncio.sleep(hold)
        cluster.nodes[node].start()
        added = await self._member_call("POST", "/cluster/members", cluster.peer_spec(node), others, (200, 201))
        self.history.fault("add_member", ids[node], ok=added)
        if not added:
            print(f"  replace: could not add {ids[node]} back within {MEMBER_CALL_S:.0f} s", flush=True)

    async def _member_call(self, method: str, path: str, body: dict | None, nodes: list[int],
                           wanted: tuple[int, ...]) -> bool:
        """A membership change through any of `nodes`, retried until an answer in `wanted` or the time is up."""
        assert self.session is not None
        deadline = time.monotonic() + MEMBER_CALL_S
        attempt = 0
        while time.monotonic() < deadline:
            node = nodes[attempt % len(nodes)]
            attempt += 1
            try:
                async with self.session.request(method, f"{self.cluster.urls[node]}{path}", headers=self.cluster.auth,
                                                data=orjson.dumps(body) if body is not None else None,
                                                timeout=aiohttp.ClientTimeout(total=15)) as resp:
                    await resp.read()
                    if resp.status in wanted:
                        return True
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
            await asyncio.sleep(0.2)
        return False

    async def _clock(self, node: int, offset_ms: int) -> None:
        assert self.session is not None
        try:
            async with self.session.post(f"{self.cluster.urls[node]}/debug/clock", headers=self.cluster.auth,
                                         data=orjson.dumps({"offset_ms": offset_ms}),
                                         timeout=aiohttp.ClientTimeout(total=3)) as resp:
                await resp.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass

    async def heal_everything(self) -> None:
        """After the run: every node running and resumed, links restored, clocks true."""
        for node in self.cluster.nodes:
            node.resume()
            if not node.alive():
                node.start()
        await self.network.heal(self.cluster.urls)
        await self.cluster.wait_ready(timeout=60)
        for i in range(self.cluster.size):
            await self._clock(i, 0)

