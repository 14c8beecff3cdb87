"""Node configuration from flags and RAFTQUEUE_* environment variables (flags win).

    raftqueue serve --node-id n1 --raft-addr 127.0.0.1:9081 --http-addr 127.0.0.1:8081 \
        --peer n1=127.0.0.1:9081=http://127.0.0.1:8081 --peer n2=... --peer n3=... \
        --data-dir ./data/n1 --cluster-secret-file ./data/cluster.secret

A peer is `id=raft_host:port=http_url`; the list may include this node (its entry supplies the defaults
for --raft-addr and the advertised HTTP URL). Durations take ms or a suffix: 500ms, 30s, 5m, 24h, 7d.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from raftqueue.replica import Member

_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {None: 1, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


class ConfigError(ValueError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def parse_duration_ms(text: str | int, name: str) -> int:
    if isinstance(text, int):
        return text
    match = _DURATION.match(str(text))
    if not match:
        raise ConfigError(f"{name}: {text!r} is not a duration (use ms or a suffix: 500ms, 30s, 5m, 24h, 7d)")
    return int(match.group(1)) * _UNIT_MS[match.group(2)]


def parse_size(text: str | int, name: str) -> int:
    if isinstance(text, int):
        return text
    match = re.match(r"^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib)?\s*$", str(text).lower())
    if not match:
        raise ConfigError(f"{name}: {text!r} is not a size (e.g. 1048576, 512k, 1m)")
    factor = {None: 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1 << 20, "mb": 1 << 20, "mib": 1 << 20}
    return int(match.group(1)) * factor[match.group(2)]


def parse_peer(text: str) -> Member:
    parts = text.strip().split("=", 2)
    if len(parts) != 3 or not all(parts) or ":" not in parts[1] or "://" not in parts[2]:
        raise ConfigError(f"peer {text!r}: expected id=raft_host:port=http://host:port")
    return Member(parts[0], parts[1], parts[2].rstrip("/"))


def split_hostport(text: str, name: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name}: {text!r} is not host:port")
    return host.strip("[]"), int(port)


@dataclass
class NodeConfig:
    node_id: str
    raft_addr: str
    http_host: str
    http_port: int
    members: list[Member]
    data_dir: Path
    cluster_secret: str | None = None
    insecure_raft: bool = False
    raft_bind: str | None = None
    fsync: bool = True
    lease_ms: int = 30_000
    retention_ms: int = 24 * 3_600_000
    max_payload_bytes: int = 1 << 20
    max_body_bytes: int = 16 << 20
    propose_timeout_ms: int = 5_000
    log_level: str = "INFO"
    clock_offset_ms: int = 0
    debug_routes: bool = False
    admin_key: str | None = None
    no_auth: bool = False
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    metrics_open: bool = False
    http_timeout_ms: int = 30_000
    key_touch_interval_ms: int = 60_000
    snapshot_every: int = 20_000
    stall_grace_ms: int = 1_000
    catch_up_wait_ms: int = 20_000
    members_from_flags: bool = False
    extra: dict = field(default_factory=dict)


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--node-id", help="this node's id, e.g. n1 (env RAFTQUEUE_NODE_ID)")
    a("--raft-addr", help="host:port other nodes reach this node's Raft transport at (env RAFTQUEUE_RAFT_ADDR); "
                          "default: this node's --peer entry")
    a("--raft-bind", help="host:port to bind the Raft transport to, if not --raft-addr (env RAFTQUEUE_RAFT_BIND)")
    a("--http-addr", help="host:port to serve HTTP on (env RAFTQUEUE_HTTP_ADDR); default: the port of this "
                          "node's --peer URL on 127.0.0.1")
    a("--peer", action="append", default=None, metavar="ID=RAFT_HOST:PORT=HTTP_URL",
      help="a cluster member; repeat for each (env RAFTQUEUE_PEERS, comma-separated)")
    a("--data-dir", help="where this node keeps its log and snapshots (env RAFTQUEUE_DATA_DIR)")
    a("--cluster-secret", help="shared secret that authenticates and encrypts Raft traffic "
                               "(env RAFTQUEUE_CLUSTER_SECRET); prefer --cluster-secret-file")
    a("--cluster-secret-file", help="file holding the cluster secret (env RAFTQUEUE_CLUSTER_SECRET_FILE)")
    a("--insecure-raft", action="store_true", default=None,
      help="allow Raft without a secret; only when every Raft address is loopback (env RAFTQUEUE_INSECURE_RAFT=1)")
    a("--lease", help="default lease (visibility timeout) when neither job nor request sets one; default 30s "
                      "(env RAFTQUEUE_LEASE)")
    a("--retention", help="how long finished jobs and their idempotency keys are kept; default 24h "
                          "(env RAFTQUEUE_RETENTION)")
    a("--max-payload", help="largest payload/result/checkpoint; default 1m (env RAFTQUEUE_MAX_PAYLOAD)")
    a("--max-body", help="largest request body (batches); default 16m (env RAFTQUEUE_MAX_BODY)")
    a("--no-fsync", action="store_true", default=None,
      help="do not fsync the log (faster; loses acknowledged writes on power loss). Development only "
           "(env RAFTQUEUE_NO_FSYNC=1)")
    a("--log-level", help="DEBUG, INFO, WARNING (env RAFTQUEUE_LOG_LEVEL); default INFO")
    a("--admin-key", help="the bootstrap admin API key, the same on every node (env RAFTQUEUE_ADMIN_KEY); "
                          "prefer --admin-key-file. At least 24 characters")
    a("--admin-key-file", help="file holding the bootstrap admin key (env RAFTQUEUE_ADMIN_KEY_FILE)")
    a("--no-auth", action="store_true", default=None,
      help="DEVELOPMENT ONLY: accept every request without an API key (env RAFTQUEUE_NO_AUTH=1)")
    a("--tls-cert", help="serve HTTPS with this certificate chain (PEM) (env RAFTQUEUE_TLS_CERT)")
    a("--tls-key", help="the certificate's private key (PEM) (env RAFTQUEUE_TLS_KEY)")
    a("--tls-ca", help="CA bundle to verify other nodes' HTTPS certificates when forwarding (env RAFTQUEUE_TLS_CA)")
    a("--metrics-open", action="store_true", default=None,
      help="serve /metrics without an API key (env RAFTQUEUE_METRICS_OPEN=1)")
    a("--http-timeout", help="close a connection idle this long, and give up on a request body that takes this "
                             "long to arrive; default 30s (env RAFTQUEUE_HTTP_TIMEOUT)")
    a("--key-touch-interval", help="how often a node records when each API key was last used; default 60s "
                                   "(env RAFTQUEUE_KEY_TOUCH_INTERVAL)")
    a("--snapshot-every", type=int, default=None,
      help="snapshot the state and trim the log after this many entries, once the log also holds a quarter of "
           "the last snapshot's bytes (or 64 MB); default 20000 (env RAFTQUEUE_SNAPSHOT_EVERY)")
    a("--stall-grace", help="how long a follower still connected to the leader waits without its heartbeats before "
                            "it asks for an election, 0 to 1s; default 1s (env RAFTQUEUE_STALL_GRACE). A leader "
                            "that crashed closes its connections and is replaced in about 0.4s whatever this is; "
                            "a hung or cut-off one after about this long plus 0.4s. 0 suits machines that are never "
                            "starved of CPU; the default rides out a collector or a busy machine")
    a("--catch-up-wait", help="how long POST /cluster/members waits for the new node to catch up with the log "
                              "before it answers 202 while the catch-up goes on (plus up to 5s for the commit); "
                              "1s to 10m, default 20s (env RAFTQUEUE_CATCH_UP_WAIT). With the 5s, keep it under "
                              "your HTTP clients' timeout (the CLI's is 30s)")
    a("--members-from-flags", action="store_true", default=None,
      help="take the members from --peer even though this node's data directory records others (they were changed "
           "with POST/DELETE /cluster/members). For restoring a backup onto other addresses: start every node with "
           "it and the same --peer list, once (env RAFTQUEUE_MEMBERS_FROM_FLAGS=1)")
    a("--clock-offset-ms", type=int, default=None, help=argparse.SUPPRESS)  # chaos testing: skew this node's clock
    a("--debug-routes", action="store_true", default=None, help=argparse.SUPPRESS)  # chaos testing: /debug/*


def _pick(value, env_name: str):
    return value if value is not None else _env(env_name)


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    node_id = _pick(args.node_id, "RAFTQUEUE_NODE_ID")
    if not node_id:
        raise ConfigError("--node-id (or RAFTQUEUE_NODE_ID) is required")
    peer_texts = args.peer if args.peer else [p for p in (_env("RAFTQUEUE_PEERS") or "").split(",") if p.strip()]
    members = [parse_peer(p) for p in peer_texts]
    ids = [m.id for m in members]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"peers: duplicate node id in {ids}")
    me = next((m for m in members if m.id == node_id), None)
    raft_addr = _pick(args.raft_addr, "RAFTQUEUE_RAFT_ADDR") or (me.raft_addr if me else None)
    if not raft_addr:
        raise ConfigError("--raft-addr is required when this node has no --peer entry")
    split_hostport(raft_addr, "--raft-addr")
    http_addr = _pick(args.http_addr, "RAFTQUEUE_HTTP_ADDR")
    if http_addr is None:
        if me is None:
            raise ConfigError("--http-addr is required when this node has no --peer entry")
        port = me.http_addr.rsplit(":", 1)[-1].split("/")[0]
        http_addr = f"127.0.0.1:{port}"
    http_host, http_port = split_hostport(http_addr, "--http-addr")
    if me is None:
        me = Member(node_id, raft_addr, f"http://{http_host}:{http_port}")
        members.append(me)
    elif me.raft_addr != raft_addr:
        members = [Member(m.id, raft_addr, m.http_addr) if m.id == node_id else m for m in members]
    data_dir = _pick(args.data_dir, "RAFTQUEUE_DATA_DIR")
    if not data_dir:
        raise ConfigError("--data-dir (or RAFTQUEUE_DATA_DIR) is required")
    secret = _pick(args.cluster_secret, "RAFTQUEUE_CLUSTER_SECRET")
    secret_file = _pick(args.cluster_secret_file, "RAFTQUEUE_CLUSTER_SECRET_FILE")
    if secret is None and secret_file:
        try:
            secret = Path(secret_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--cluster-secret-file: cannot read {secret_file}: {exc}") from None
        if not secret:
            raise ConfigError(f"--cluster-secret-file: {secret_file} is empty")
    admin_key = _pick(args.admin_key, "RAFTQUEUE_ADMIN_KEY")
    admin_key_file = _pick(args.admin_key_file, "RAFTQUEUE_ADMIN_KEY_FILE")
    if admin_key is None and admin_key_file:
        try:
            admin_key = Path(admin_key_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--admin-key-file: cannot read {admin_key_file}: {exc}") from None
    no_auth = bool(args.no_auth or _env("RAFTQUEUE_NO_AUTH") == "1")
    if admin_key is not None and len(admin_key) < 24:
        raise ConfigError("the admin key must be at least 24 characters (e.g. openssl rand -hex 24)")
    if admin_key is None and not no_auth:
        raise ConfigError("set the bootstrap admin key (RAFTQUEUE_ADMIN_KEY or --admin-key-file), "
                          "or --no-auth for a development node")
    tls_cert, tls_key = _pick(args.tls_cert, "RAFTQUEUE_TLS_CERT"), _pick(args.tls_key, "RAFTQUEUE_TLS_KEY")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key go together")
    raft_bind = _pick(args.raft_bind, "RAFTQUEUE_RAFT_BIND")
    if raft_bind:
        split_hostport(raft_bind, "--raft-bind")
    return NodeConfig(
        node_id=node_id, raft_addr=raft_addr, http_host=http_host, http_port=http_port, members=members,
        data_dir=Path(data_dir), cluster_secret=secret,
        insecure_raft=bool(args.insecure_raft or _env("RAFTQUEUE_INSECURE_RAFT") == "1"),
        raft_bind=raft_bind,
        fsync=not (args.no_fsync or _env("RAFTQUEUE_NO_FSYNC") == "1"),
        lease_ms=parse_duration_ms(_pick(args.lease, "RAFTQUEUE_LEASE") or "30s", "--lease"),
        retention_ms=parse_duration_ms(_pick(args.retention, "RAFTQUEUE_RETENTION") or "24h", "--retention"),
        max_payload_bytes=parse_size(_pick(args.max_payload, "RAFTQUEUE_MAX_PAYLOAD") or "1m", "--max-payload"),
        max_body_bytes=parse_size(_pick(args.max_body, "RAFTQUEUE_MAX_BODY") or "16m", "--max-body"),
        log_level=(_pick(args.log_level, "RAFTQUEUE_LOG_LEVEL") or "INFO").upper(),
        clock_offset_ms=int(_pick(args.clock_offset_ms, "RAFTQUEUE_CLOCK_OFFSET_MS") or 0),
        debug_routes=bool(args.debug_routes or _env("RAFTQUEUE_DEBUG_ROUTES") == "1"),
        admin_key=admin_key, no_auth=no_auth, tls_cert=tls_cert, tls_key=tls_key,
        tls_ca=_pick(args.tls_ca, "RAFTQUEUE_TLS_CA"),
        metrics_open=bool(args.metrics_open or _env("RAFTQUEUE_METRICS_OPEN") == "1"),
        http_timeout_ms=parse_duration_ms(_pick(args.http_timeout, "RAFTQUEUE_HTTP_TIMEOUT") or "30s", "--http-timeout"),
        key_touch_interval_ms=parse_duration_ms(_pick(args.key_touch_interval, "RAFTQUEUE_KEY_TOUCH_INTERVAL") or "60s",
                                                "--key-touch-interval"),
        snapshot_every=int(_pick(args.snapshot_every, "RAFTQUEUE_SNAPSHOT_EVERY") or 20_000),
        stall_grace_ms=parse_duration_ms(_pick(args.stall_grace, "RAFTQUEUE_STALL_GRACE") or "1s", "--stall-grace"),
        catch_up_wait_ms=parse_duration_ms(_pick(args.catch_up_wait, "RAFTQUEUE_CATCH_UP_WAIT") or "20s",
                                           "--catch-up-wait"),
        members_from_flags=bool(args.members_from_flags or _env("RAFTQUEUE_MEMBERS_FROM_FLAGS") == "1"),
    )
