"""Run-time membership change on real processes: add a fourth node, remove the leader, restart everyone with
the flags they started with, and lose a node of the new cluster. Only the new member list has a majority there,
so the last step fails if any node still counted the old one."""
from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys

import aiohttp
import orjson

from tests.support.api_cluster import Api, make_cluster
from tests.support.procs import REPO


def _cli(cluster, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAFTQUEUE_KEY=cluster.admin_key, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "raftqueue", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=REPO)


async def _submit(api: Api, node: int, count: int, prefix: str) -> list[str]:
    ids = []
    for i in range(count):
        status, body, _ = await api.post(node, "/jobs", {"payload": i, "idempotency_key": f"{prefix}-{i}"})
        assert status == 201, body
        ids.append(body["job_id"])
    return ids


async def _wait_live(api: Api, node: int) -> None:
    """A started node answers /live before it is a member (it is not ready until it is added)."""
    for _ in range(300):
        try:
            if (await api.get(node, "/live", timeout=1))[0] == 200:
                return
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"node {node} never answered /live")


def _ids(status: dict) -> list[str]:
    return [m["id"] for m in status["members"]]


@contextlib.asynccontextmanager
async def _first_three_running(tmp_path, nodes: int, extra_args: list[str]):
    """A cluster of `nodes` whose first three are the members, started and ready; the others start later, each
    with the members and itself as its peers, to be added."""
    cluster = make_cluster(tmp_path, nodes=nodes, initial_members=3, extra_args=extra_args)
    for node in cluster.nodes[:3]:
        node.start()
    try:
        await cluster.wait_ready(nodes=[0, 1, 2])
        async with Api(cluster) as api:
            yield cluster, api
    finally:
        cluster.stop_all()


async def test_add_a_node_remove_the_leader_restart_and_fail_over_on_the_new_members(tmp_path):
    # n1-n3 form the cluster; n4 starts with their addresses and its own, and is added at run time
    async with _first_three_running(tmp_path, 4, ["--snapshot-every", "100"]) as (cluster, api):
        jobs = await _submit(api, 1, 120, "before")
        status, body, _ = await api.post(1, "/cluster/members", cluster.peer_spec(3))
        assert status == 409 and "does not answer" in body["error"]["message"], body  # not started yet
        cluster.nodes[3].start()
        await _wait_live(api, 3)
        status, body, _ = await api.get(3, "/ready")
        assert status == 503, body  # not a member yet: nobody talks to it
        for _ in range(150):  # ... and it finds that out from the members
            status = await api.cluster_status(3, digest=False)
            if status and status.get("not_yet_a_member"):
                break
            await asyncio.sleep(0.1)
        assert "removed_from_cluster" not in status and "n4" not in status["not_yet_a_member"]["members"]

        # add through a follower; the answer lists the new members
        leader = await api.leader()
        follower = next(i for i in range(3) if i != leader)
        held = (await api.cluster_status(leader, digest=False))["last_log_index"]
        status, body, headers = await api.post(follower, "/cluster/members", cluster.peer_spec(3))
        assert status == 201, body
        assert [m["id"] for m in body["members"]] == ["n1", "n2", "n3", "n4"] and "X-Raft-Index" in headers
        # n4 caught up (the snapshot and the log) before it was added, not after
        assert (await api.cluster_status(3, digest=False))["last_log_index"] >= held
        status, body, _ = await api.post(leader, "/cluster/members", cluster.peer_spec(3))
        assert status == 200, body  # the same change again: nothing new

        # conflicts and unknowns change nothing
        taken = {**cluster.peer_spec(3), "id": "n9"}
        status, body, _ = await api.post(follower, "/cluster/members", taken)
        assert status == 409 and "belongs to member n4" in body["error"]["message"], body
        status, body, _ = await api.post(follower, "/cluster/members", {**cluster.peer_spec(3),
                                                                        "raft_addr": "127.0.0.1:1"})
        assert status == 409 and "already a member" in body["error"]["message"], body
        status, body, _ = await api.request(follower, "DELETE", "/cluster/members/n9")
        assert status == 404, body

        # n4 is sent the snapshot and the log, and takes writes
        jobs += await _submit(api, 3, 30, "via-n4")
        statuses = await api.wait_converged(nodes=[0, 1, 2, 3])
        assert all(_ids(s) == ["n1", "n2", "n3", "n4"] for s in statuses)

        # remove the leader with the CLI, through n4: it hands over first, and the new leader removes it
        old = await api.leader()
        old_id = cluster.ids[old]
        proc = await asyncio.to_thread(_cli, cluster, "cluster", "remove", old_id, "--url", cluster.urls[3],
                                       "--json")
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        body = orjson.loads(proc.stdout)
        assert body["removed"] == old_id
        assert [m["id"] for m in body["members"]] == [i for i in cluster.ids if i != old_id]
        proc = await asyncio.to_thread(_cli, cluster, "cluster", "remove", old_id, "--url", cluster.urls[3])
        assert proc.returncode == 3 and "not a member" in proc.stderr, (proc.stdout, proc.stderr)
        # the removed node is not told by Raft; it finds out from the members, and says so
        for _ in range(150):
            status = await api.cluster_status(old, digest=False)
            if status and status.get("removed_from_cluster"):
                break
            await asyncio.sleep(0.1)
        assert status["removed_from_cluster"]["by"] != old_id, status
        assert old_id not in status["removed_from_cluster"]["members"]
        assert "is not a member any more" in cluster.nodes[old].log_text()
        cluster.nodes[old].terminate()
        rest = [i for i in range(4) if i != old]
        jobs += await _submit(api, rest[0], 30, "after-remove")
        statuses = await api.wait_converged(nodes=rest)
        assert all(_ids(s) == [cluster.ids[i] for i in rest] for s in statuses)

        # restart the three with the flags they started with (n1-n3 still list the removed node)
        for i in rest:
            cluster.nodes[i].terminate()
        for i in rest:
            cluster.nodes[i].start()
        await cluster.wait_ready(nodes=rest)
        statuses = await api.wait_converged(nodes=rest)
        assert all(_ids(s) == [cluster.ids[i] for i in rest] for s in statuses)
        assert all(s["snapshot_index"] > 0 for s in statuses)  # the list came through a snapshot too

        # kill -9 the new leader: the other two are a majority of the new list (not of n1-n3's)
        leader = await api.leader()
        cluster.nodes[leader].kill()
        survivors = [i for i in rest if i != leader]
        await api.leader(timeout=20, exclude={leader, old})
        jobs += await _submit(api, survivors[0], 10, "after-kill")
        # removing a live member now would leave one of two up: refused, nothing changes
        status, body, _ = await api.request(survivors[0], "DELETE", f"/cluster/members/{cluster.ids[survivors[1]]}")
        assert status == 409 and "would be up" in body["error"]["message"], body
        for job in jobs:
            status, body, _ = await api.get(survivors[1], f"/jobs/{job}", params={"consistency": "stale"})
            assert status == 200, (job, body)
        cluster.nodes[leader].start()
        await api.wait_converged(nodes=rest)


async def test_a_leader_added_after_its_newest_snapshot_can_add_another_node(tmp_path):
    """The leader's snapshot lists the members before the leader itself was added; the new node installing it
    must keep listening to that leader until the leader's own add entry reaches it."""
    flags = ["--snapshot-every", "100", "--stall-grace", "0"]
    async with _first_three_running(tmp_path, 5, flags) as (cluster, api):
        await _submit(api, 0, 130, "fill")  # every node snapshots, n4 will be sent one without itself
        cluster.nodes[3].start()
        await _wait_live(api, 3)
        status, body, _ = await api.post(0, "/cluster/members", cluster.peer_spec(3))
        assert status == 201, body
        await api.wait_converged(nodes=[0, 1, 2, 3])
        status = await api.cluster_status(3, digest=False)
        assert status["snapshot_index"] > 0  # n4 was sent a snapshot taken before it was added

        # make n4 the leader: pause whoever else leads until n4 wins an election
        for _ in range(30):
            leader = await api.leader()
            if leader == 3:
                break
            cluster.nodes[leader].pause()
            await api.leader(exclude={leader})
            cluster.nodes[leader].resume()
        assert await api.leader() == 3

        cluster.nodes[4].start()
        await _wait_live(api, 4)
        status, body, _ = await api.post(3, "/cluster/members", cluster.peer_spec(4))
        assert status == 201, body
        statuses = await api.wait_converged(nodes=[0, 1, 2, 3, 4], timeout=30)
        assert all(_ids(s) == ["n1", "n2", "n3", "n4", "n5"] for s in statuses)
        await _submit(api, 4, 5, "via-n5")


async def _start_n4_cut_off(cluster, api: Api) -> None:
    """Start n4 (needs --debug-routes) and make it drop all Raft traffic: it answers /live, but cannot catch up
    until `/debug/partition {"drop": []}`."""
    cluster.nodes[3].start()
    await _wait_live(api, 3)
    status, body, _ = await api.post(3, "/debug/partition", {"drop": ["n1", "n2", "n3"]})
    assert status == 200, body


async def test_a_node_to_add_gets_no_vote_until_it_has_caught_up(tmp_path):
    """While a node to add is catching up, the majority is the old one: with one old follower stopped, writes
    still commit. Counted at once (a voter holding nothing), the new node would be needed for three of four."""
    async with _first_three_running(tmp_path, 4, ["--debug-routes"]) as (cluster, api):
        jobs = await _submit(api, 0, 20, "before")
        await _start_n4_cut_off(cluster, api)
        leader = await api.leader()
        follower, other = [i for i in range(3) if i != leader]
        adding = asyncio.ensure_future(api.post(follower, "/cluster/members", cluster.peer_spec(3)))
        catching_up = None
        for _ in range(100):
            status = await api.cluster_status(leader, digest=False)
            catching_up = status.get("catching_up")
            if catching_up:
                break
            await asyncio.sleep(0.05)
        assert catching_up and catching_up["id"] == "n4" and catching_up["match_index"] == 0, status
        assert _ids(status) == ["n1", "n2", "n3"]
        # the same add again, meanwhile: 202 and how far it is; writes through that follower are not held up
        status, body, _ = await api.post(follower, "/cluster/members", cluster.peer_spec(3))
        assert status == 202 and body["catching_up"]["id"] == "n4", body
        assert [m["id"] for m in body["members"]] == ["n1", "n2", "n3"]
        jobs += await _submit(api, follower, 5, "through-the-follower")
        # an add that may never catch up can be cancelled: DELETE gives it up, and the waiting add is refused
        status, body, _ = await api.request(follower, "DELETE", "/cluster/members/n4")
        assert status == 200 and body.get("was_catching_up") and _ids(body) == ["n1", "n2", "n3"], body
        status, body, _ = await adding
        assert status == 409 and "cancelled" in body["error"]["message"], body
        assert "catching_up" not in await api.cluster_status(leader, digest=False)
        adding = asyncio.ensure_future(api.post(follower, "/cluster/members", cluster.peer_spec(3)))
        for _ in range(100):
            if (await api.cluster_status(leader, digest=False)).get("catching_up"):
                break
            await asyncio.sleep(0.05)
        cluster.nodes[other].pause()
        try:
            jobs += await _submit(api, leader, 5, "one-old-follower-stopped")  # two of the three old members
        finally:
            cluster.nodes[other].resume()
        assert not adding.done()
        status, body, _ = await api.post(3, "/debug/partition", {"drop": []})
        assert status == 200, body
        status, body, _ = await adding
        assert status == 201 and [m["id"] for m in body["members"]] == ["n1", "n2", "n3", "n4"], body
        statuses = await api.wait_converged(nodes=[0, 1, 2, 3])
        assert all(_ids(s) == ["n1", "n2", "n3", "n4"] for s in statuses)
        for job_id in jobs:
            assert (await api.get(3, f"/jobs/{job_id}"))[0] == 200


async def test_an_add_that_outlasts_catch_up_wait_answers_202_and_the_leader_adds_the_node_later(tmp_path):
    """`--catch-up-wait 1s`: a node that is still being caught up when the wait ends is answered 202 with its
    progress, not refused; the catch-up goes on, and once the node can catch up the leader adds it by itself
    (no second request)."""
    async with _first_three_running(tmp_path, 4, ["--debug-routes", "--catch-up-wait", "1s"]) as (cluster, api):
        jobs = await _submit(api, 0, 10, "before")
        await _start_n4_cut_off(cluster, api)
        leader = await api.leader()
        follower = next(i for i in range(3) if i != leader)
        status, body, _ = await api.post(follower, "/cluster/members", cluster.peer_spec(3), timeout=30)
        assert status == 202, body
        assert body["catching_up"]["id"] == "n4" and body["catching_up"]["match_index"] == 0, body
        assert [m["id"] for m in body["members"]] == ["n1", "n2", "n3"], body
        status = await api.cluster_status(leader, digest=False)
        assert status["catching_up"]["id"] == "n4" and _ids(status) == ["n1", "n2", "n3"], status
        status, body, _ = await api.post(3, "/debug/partition", {"drop": []})
        assert status == 200, body
        for _ in range(300):
            status = await api.cluster_status(leader, digest=False)
            if _ids(status) == ["n1", "n2", "n3", "n4"]:
                break
            await asyncio.sleep(0.1)
        assert _ids(status) == ["n1", "n2", "n3", "n4"] and "catching_up" not in status, status
        statuses = await api.wait_converged(nodes=[0, 1, 2, 3])
        assert all(_ids(s) == ["n1", "n2", "n3", "n4"] for s in statuses), statuses
        for job_id in jobs:
            assert (await api.get(3, f"/jobs/{job_id}"))[0] == 200
