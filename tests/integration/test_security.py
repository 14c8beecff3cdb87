"""Security on a real 3-node cluster: scopes route by route, revocation everywhere, no secret stored or logged,
forwarding headers that cannot be spoofed, the Raft pickle probe, hostile and slow clients, a schemathesis
fuzz run, TLS, and refusal to run Raft without a secret."""
from __future__ import annotations

import asyncio
import os
import pickle
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import aiohttp
import orjson
import pytest

from raftqueue.api.auth import OPEN, ROUTE_SCOPES, TYPE_SCOPES
from tests.support.api_cluster import Api, make_cluster, running_cluster
from raftqueue.localcluster import free_ports
from tests.support.procs import REPO


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    flags = ["--snapshot-every", "100", "--http-timeout", "2s", "--key-touch-interval", "1s"]
    with running_cluster(tmp_path_factory.mktemp("sec"), extra_args=flags) as cluster:
        yield cluster


@pytest.fixture
async def api(cluster):
    async with Api(cluster) as api:
        yield api


async def _make_keys(api: Api, owner: str = "team") -> dict[str, str]:
    keys = {}
    for key_type in ("client", "worker", "admin"):
        status, body, _ = await api.post(0, "/admin/keys", {"name": f"{key_type}-key", "owner_id": owner,
                                                            "type": key_type})
        assert status == 201, body
        assert body["key"].startswith(f"{key_type}_") and body["scopes"] == TYPE_SCOPES[key_type]
        keys[key_type] = body["key"]
    return keys


def _concrete(path: str, job_id: str) -> str:
    return (path.replace("{job_id}", job_id).replace("{name}", "scope-q").replace("{key_id}", "nokey")
            .replace("{member_id}", "nobody"))


BODIES = {"/jobs": {"payload": 1, "queue": "scope-q"}, "/jobs/batch": {"jobs": [{"payload": 1, "queue": "scope-q"}]},
          "/jobs/lease": {"queue": "scope-nothing"}, "/jobs/ack": {"acks": [{"job_id": "x", "lease_token": "t"}]},
          "/admin/keys": {"name": "n", "owner_id": "o", "type": "client"}}


async def test_every_route_checks_its_scope_for_every_key_type(api):
    keys = await _make_keys(api)
    status, job, _ = await api.post(0, "/jobs", {"payload": "scope", "queue": "scope-q"})
    assert status == 201
    checked = 0
    for (method, path), scope in sorted(ROUTE_SCOPES.items()):
        if scope == OPEN or path.startswith(("/debug", "/_internal", "/dashboard", "/metrics")) or path == "/events":
            continue
        url = _concrete(path, job["job_id"])
        body = BODIES.get(path, {}) if method != "GET" and method != "DELETE" else None
        status, answer, _ = await _call(api, method, url, body, None)
        assert status == 401, (method, path, status, answer)
        status, answer, _ = await _call(api, method, url, body, "client_nothere_bogus")
        assert status == 401, (method, path, status, answer)
        for key_type, key in keys.items():
            status, answer, _ = await _call(api, method, url, body, key)
            if scope in TYPE_SCOPES[key_type]:
                assert status not in (401, 403), (key_type, method, path, status, answer)
            else:
                assert status == 403 and answer["error"]["code"] == "forbidden", (key_type, method, path, answer)
        checked += 1
    assert checked >= 20


async def _call(api: Api, method: str, url: str, body, key: str | None):
    saved = api.key
    api.key = key
    try:
        return await api.request(1, method, url, body)
    finally:
        api.key = saved


async def test_revocation_is_refused_by_every_node(api):
    status, created, _ = await api.post(1, "/admin/keys", {"name": "temp", "owner_id": "o1", "type": "client"})
    key = created["key"]
    for node in range(3):
        assert (await _node_call(api, node, "GET", "/stats", key))[0] == 200
    status, answer, _ = await _node_call(api, 2, "DELETE", f"/keys/{created['key_id']}", key)  # revoke our own
    assert status == 200 and answer["revoked_at"]
    for node in range(3):
        deadline = time.monotonic() + 3
        while (await _node_call(api, node, "GET", "/stats", key))[0] != 401:
            assert time.monotonic() < deadline, f"node {node} still accepts a revoked key"
            await asyncio.sleep(0.02)


async def _node_call(api: Api, node: int, method: str, path: str, key: str, body=None):
    saved = api.key
    api.key = key
    try:
        return await api.request(node, method, path, body)
    finally:
        api.key = saved


async def test_last_used_at_is_recorded_through_any_node_and_the_touch_route_is_not_public(api):
    created = (await api.post(0, "/admin/keys", {"name": "used", "owner_id": "u", "type": "client"}))[1]
    assert created["last_used_at"] is None
    leader = await api.leader()
    assert (await _node_call(api, (leader + 1) % 3, "GET", "/stats", created["key"]))[0] == 200  # a follower
    deadline = time.monotonic() + 10
    while True:
        listed = (await api.get(leader, "/admin/keys"))[1]
        record = next(k for k in listed if k["key_id"] == created["key_id"])
        if record["last_used_at"] is not None:
            break
        assert time.monotonic() < deadline, "last_used_at was never recorded"
        await asyncio.sleep(0.2)
    for node in range(3):  # outsiders, even admins, cannot write usage times
        status, _, _ = await api.post(node, "/_internal/touch-keys", {created["key_id"]: 1})
        assert status == 404


async def test_a_key_owner_cannot_revoke_someone_elses_key(api):
    mine = (await api.post(0, "/admin/keys", {"name": "a", "owner_id": "alice", "type": "client"}))[1]
    theirs = (await api.post(0, "/admin/keys", {"name": "b", "owner_id": "bob", "type": "worker"}))[1]
    status, answer, _ = await _node_call(api, 1, "DELETE", f"/keys/{theirs['key_id']}", mine["key"])
    assert status == 403
    status, own, _ = await _node_call(api, 1, "GET", "/keys", mine["key"])
    assert status == 200 and [k["key_id"] for k in own] == [mine["key_id"]]
    # the seed passed the whole key to DELETE /keys/{key}: that works too
    status, answer, _ = await _node_call(api, 2, "DELETE", f"/keys/{mine['key']}", mine["key"])
    assert status == 200 and answer["key_id"] == mine["key_id"]


async def test_a_key_that_is_not_an_admins_cannot_revoke_its_owners_admin_key(api):
    """Owners revoke their own keys (the seed's rule), but a worker or client key must not lock its team's admin
    out: a leaked worker key would otherwise take the admin key down with it."""
    keys = await _make_keys(api, owner="team-revoke")
    listed = (await api.get(0, "/admin/keys"))[1]
    ids = {k["type"]: k["key_id"] for k in listed if k["owner_id"] == "team-revoke"}
    for node in range(3):
        status, answer, _ = await _node_call(api, node, "DELETE", f"/keys/{ids['admin']}", keys["worker"])
        assert status == 403 and "admin" in answer["error"]["message"], answer
    assert (await _node_call(api, 0, "GET", "/admin/keys", keys["admin"]))[0] == 200  # still works
    status, answer, _ = await _node_call(api, 1, "DELETE", f"/keys/{ids['client']}", keys["worker"])
    assert status == 200 and answer["key_id"] == ids["client"]  # its owner's other keys it may revoke
    status, answer, _ = await _node_call(api, 2, "DELETE", f"/keys/{ids['worker']}", keys["admin"])
    assert status == 200  # an admin revokes any key


async def test_a_forwarded_request_keeps_its_path_as_the_client_encoded_it(api):
    """A follower passes a request on to the leader with its path still encoded: "<id>%3Fx" names no key; decoded
    on the way it became "<id>" plus a query, and the leader revoked that key."""
    created = (await api.post(0, "/admin/keys", {"name": "encoded", "owner_id": "enc", "type": "client"}))[1]
    leader = await api.leader()
    follower = (leader + 1) % 3
    status, answer, _ = await api.request(follower, "DELETE", f"/keys/{created['key_id']}%3Fx")
    assert status == 404, answer
    for node in range(3):
        assert (await _node_call(api, node, "GET", "/stats", created["key"]))[0] == 200


async def test_a_key_made_a_moment_ago_long_polls_through_a_follower_at_once(api):
    """The follower may not have applied the new key yet: it catches up (or passes the request on alone) rather
    than refusing it, and the long poll gets the job submitted meanwhile."""
    leader = await api.leader()
    follower = (leader + 1) % 3
    created = (await api.post(leader, "/admin/keys", {"name": "fresh", "owner_id": "fresh", "type": "worker"}))[1]
    queue = f"fresh{time.time_ns()}"
    async with Api(api.cluster, key=created["key"]) as worker:
        poll = asyncio.ensure_future(worker.post(follower, "/jobs/lease", {"queue": queue, "wait_ms": 5000}))
        await asyncio.sleep(0.3)
        status, job, _ = await api.post(leader, "/jobs", {"payload": "for the new worker", "queue": queue})
        assert status == 201
        status, leased, _ = await poll
    assert status == 200 and leased["job_id"] == job["job_id"], leased


async def test_the_bearer_scheme_is_case_insensitive(api):
    for scheme in ("Bearer", "bearer", "BEARER"):
        status, _, _ = await api.get(1, "/stats", headers={"Authorization": f"{scheme} {api.cluster.admin_key}"})
        assert status == 200, scheme


async def test_secrets_are_absent_from_lists_logs_log_segments_and_snapshots(api, cluster):
    keys = await _make_keys(api, owner="secrets")
    for key in keys.values():
        for node in range(3):
            await _node_call(api, node, "GET", "/stats", key)
    # enough log entries for every node to take a snapshot (--snapshot-every 100): one at a time, so that
    # group commit does not pack them into a few entries
    for i in range(150):
        await api.post(i % 3, "/jobs", {"payload": i})
    deadline = time.monotonic() + 20
    while not all(list((cluster.data_dir / n / "snapshots").glob("snap-*.bin")) for n in cluster.ids):
        assert time.monotonic() < deadline, "no snapshots were written"
        await asyncio.sleep(0.2)
    secrets = [k.split("_", 2)[2] for k in keys.values()] + [cluster.admin_key]
    status, listed, _ = await api.get(0, "/admin/keys")
    text = str(listed)
    assert status == 200 and "hash" not in text and "salt" not in text
    for secret in secrets:
        assert secret not in text
    for path in cluster.data_dir.rglob("*"):
        if not path.is_file() or path.name in ("admin.key", "cluster.secret"):
            continue
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"a secret appears in {path}"


async def test_spoofed_forwarding_headers_get_nothing(api):
    leader = await api.leader()
    follower = (leader + 1) % 3
    forged = {"X-Raftqueue-Forwarded-By": "n9", "X-Raftqueue-Forward-Auth": f"{int(time.time())}.deadbeef"}
    # a follower still forwards a write whose headers claim it was forwarded already (they mean nothing)
    status, answer, _ = await api.post(follower, "/jobs", {"payload": "spoof"}, headers=forged)
    assert status == 201, answer
    # no key plus forged headers is still no key
    saved = api.key
    api.key = None
    try:
        status, answer, _ = await api.post(leader, "/jobs", {"payload": 1}, headers=forged)
    finally:
        api.key = saved
    assert status == 401
    # the internal batch endpoint refuses a frame without the cluster secret's signature
    status, answer, _ = await api.post(leader, "/_internal/forward", raw=b"\x02\x00\x00\x00{}",
                                       headers={"X-Raftqueue-Batch-Auth": f"{int(time.time())}.00"})
    assert status == 401


async def test_a_planned_write_is_checked_against_the_key_on_the_leader(api, cluster):
    """A follower sends a pure write to the leader as store commands plus the client's key. The leader still
    decides: a key it refuses (revoked there but not yet on the follower, or unknown) or one without the
    route's scope gets 401/403 in the batch answer, and nothing is proposed."""
    from raftqueue.api.batch_forward import AUTH_HEADER, PATH, batch_key, decode_frame, encode_frame, sign
    keys = await _make_keys(api, owner="planned")
    leader = await api.leader()
    secret = cluster.secret_path.read_text().strip()
    command = [{"kind": "submit", "queue": "planned-q", "payload": "1"}]
    body = orjson.dumps(command)
    cases = [(cluster.admin_key, 200), (None, 401), ("client_0123456789ab_not-a-real-secret", 401),
             (keys["worker"], 403), (keys["client"], 200)]
    items = [{"k": "p", "r": ["POST", "/jobs"], "t": token, "n": len(body)} for token, _ in cases]
    frame = encode_frame(items, [body] * len(items))
    async with aiohttp.ClientSession() as session:
        async with session.post(api.cluster.urls[leader] + PATH, data=frame,
                                headers={AUTH_HEADER: sign(batch_key(secret), frame)}) as resp:
            assert resp.status == 200
            answers = decode_frame(await resp.read())
    for (token, want), (meta, answer) in zip(cases, answers):
        assert meta["s"] == want, (token, meta)
        if want == 200:
            assert orjson.loads(answer)[0]["state"] == "READY" and meta["l"] == cluster.ids[leader]
    status, listed, _ = await api.get(leader, "/jobs?queue=planned-q")
    assert status == 200 and len(listed["jobs"]) == 2  # only the two accepted keys proposed anything


async def test_pickle_probe_against_raft_ports_runs_nothing(api, cluster, tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))
    for port in cluster.raft_ports:
        for payload in (zlib.compress(pickle.dumps(Exploit(), 2)), pickle.dumps(Exploit(), 2)):
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(struct.pack("i", len(payload)) + payload)
                s.sendall(struct.pack("i", len(payload)) + payload)
                await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    assert not marker.exists()
    assert all(node.alive() for node in cluster.nodes)
    assert (await api.post(0, "/jobs", {"payload": "after the probe"}))[0] == 201


async def test_hostile_bodies_and_slow_clients(api, cluster):
    node = 1
    host, port = "127.0.0.1", cluster.http_ports[node]
    auth = f"Authorization: Bearer {cluster.admin_key}\r\n"

    async def status_line(length: int, body: str, timeout: float) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(f"POST /jobs HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\n"
                     f"Content-Length: {length}\r\n\r\n{body}".encode())
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
    # a declared body over the limit is refused before it is read
    assert b" 413 " in await status_line(64 * 1024 * 1024, "", 5)
    # a body that never finishes: 408 after --http-timeout (2 s)
    assert b" 408 " in await status_line(100, '{"payload"', 6)
    # headers that never finish: the node closes the connection
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"POST /jobs HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 8) == b""
    assert time.monotonic() - started < 6
    # and the node kept serving throughout
    assert (await api.get(node, "/health"))[0] == 200


def test_schemathesis_fuzz_finds_no_server_error_or_schema_violation(cluster):
    exe = Path(sys.executable).parent / "schemathesis"
    env = dict(os.environ, SCHEMATHESIS_HOOKS="tests.support.schemathesis_hooks", PYTHONPATH=str(REPO))
    proc = subprocess.run([str(exe), "run", f"{cluster.urls[1]}/openapi.json",
                           "-H", f"Authorization: Bearer {cluster.admin_key}",
                           "--checks", "not_a_server_error,response_schema_conformance",
                           # the coverage phase trips a hypothesis bug on our recursive JSON schema (an
                           # "AST constructor recursion depth mismatch" inside schemathesis): fuzz and stateful only
                           "--phases", "fuzzing,stateful", "--max-examples", "15", "--request-timeout", "15",
                           "--workers", "2", "--max-time", "90",
                           # a generated member that is valid would be added to this cluster, and a few of them
                           # would cost it its majority: membership changes are tested in test_membership.py
                           "--exclude-path-regex", "^/cluster/members"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert all(node.alive() for node in cluster.nodes)


def test_raft_without_a_secret_is_refused_off_loopback(tmp_path):
    base = [sys.executable, "-m", "raftqueue", "serve", "--node-id", "n1", "--data-dir", str(tmp_path / "d"),
            "--admin-key", "k" * 32, "--http-addr", f"127.0.0.1:{free_ports(1)[0]}"]
    peers = ["--peer", "n1=10.255.0.1:9001=http://10.255.0.1:8001", "--peer", "n2=10.255.0.2:9001=http://x:1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTQUEUE_")}
    for extra in ([], ["--insecure-raft"]):
        proc = subprocess.run(base + peers + extra, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert "secret" in proc.stderr


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raftqueue-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_tls_cluster_serves_and_forwards_over_https(tmp_path):
    import ssl
    cert, key = _self_signed(tmp_path)
    cluster = make_cluster(tmp_path / "c", scheme="https",
                           extra_args=["--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(cert)])
    cluster.client_ssl = ssl.create_default_context(cafile=str(cert))
    cluster.start_all()
    try:
        await cluster.wait_ready(timeout=60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=cluster.client_ssl)) as session:
            leader = await cluster.leader(session)
            follower = (leader + 1) % 3
            async with session.post(f"{cluster.urls[follower]}/jobs", json={"payload": "over tls"},
                                    headers=cluster.auth) as resp:
                assert resp.status == 201, await resp.text()
                job = await resp.json()
            async with session.get(f"{cluster.urls[(leader + 2) % 3]}/jobs/{job['job_id']}",
                                   headers=cluster.auth) as resp:
                assert resp.status == 200 and (await resp.json())["payload"] == "over tls"
        with pytest.raises(aiohttp.ClientError):  # plain HTTP is not served
            async with aiohttp.ClientSession() as session:
                async with session.get(cluster.urls[0].replace("https", "http") + "/health") as resp:
                    await resp.read()
    finally:
        cluster.stop_all()


async def test_an_event_subscriber_that_stops_reading_is_dropped_and_the_node_keeps_serving(api, cluster):
    node = 2
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing, with a tiny buffer
    sock.connect(("127.0.0.1", cluster.http_ports[node]))
    sock.sendall(f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {cluster.admin_key}\r\n\r\n".encode())
    try:
        await asyncio.sleep(0.3)
        # ~120 bytes per event: 60,000 events (~7 MB) overflow the kernel's socket buffers (a few MB on loopback)
        # and then the subscriber's queue (2,000 events)
        for batch in range(60):
            jobs = [{"payload": i, "queue": f"slow-sse-{batch % 4}"} for i in range(1000)]
            status, _, _ = await api.post(0, "/jobs/batch", {"jobs": jobs})
            assert status == 201
        deadline = time.monotonic() + 20
        while True:
            status, text, _ = await api.get(node, "/metrics")
            dropped = [line for line in text.splitlines() if line.startswith("raftqueue_sse_dropped_subscribers_total")]
            if dropped and float(dropped[0].split()[-1]) >= 1:
                break
            assert time.monotonic() < deadline, dropped
            await asyncio.sleep(0.2)
        # the node closed the stream: reading what was buffered ends in EOF
        sock.settimeout(5)
        received = 0
        while chunk := sock.recv(65536):
            received += len(chunk)
        assert received > 0
        assert (await api.get(node, "/stats"))[0] == 200
    finally:
        sock.close()
