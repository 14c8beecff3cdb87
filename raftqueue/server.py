"""One node process: config -> replica -> HTTP app; clean shutdown on SIGTERM/SIGINT.

Shutdown order: stop accepting connections, release long-polls and event streams, let in-flight requests
(and so their proposals) finish, then stop the Raft node (which fails whatever is still queued).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from raftqueue.api.app import create_app
from raftqueue.api.context import Settings
from raftqueue import gctune, malloc_tune
from raftqueue.api.validation import Defaults, Limits
from raftqueue.clock import Clock
from raftqueue.config import ConfigError, NodeConfig
from raftqueue.replica import InsecureRaftRefused, Replica, ReplicaConfig

log = logging.getLogger("raftqueue.server")


def setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level, logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(client_errors_at_info)


def client_errors_at_info(record: logging.LogRecord) -> bool:
    """aiohttp logs a request it cannot parse (a header line over 8 KB, a bad encoding) as an ERROR with a
    traceback, though it answers 400 and the fault is the client's: anyone could fill a node's log with errors.
    Such a record becomes one INFO line. (A body that fails to decode shows up again, as RequestPayloadError,
    when aiohttp drains what the handler left unread.)"""
    exc = record.exc_info[1] if record.exc_info else None
    if isinstance(exc, (HttpProcessingError, RequestPayloadError)):
        text = " ".join(str(exc).split())  # aiohttp's messages span lines (a caret under the bad byte)
        record.msg, record.args = f"{record.getMessage()}: {type(exc).__name__}: {text}", None
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info = record.exc_text = None
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)  # it passed the level check as ERROR
    return True


def replica_config(config: NodeConfig) -> ReplicaConfig:
    return ReplicaConfig(node_id=config.node_id, members=config.members, data_dir=config.data_dir,
                         secret=config.cluster_secret, insecure_raft=config.insecure_raft,
                         raft_bind=config.raft_bind, fsync=config.fsync, retention_ms=config.retention_ms,
                         raft={"compact_min_entries": config.snapshot_every,
                               "stall_grace_s": config.stall_grace_ms / 1000,
                               "members_from_flags": config.members_from_flags})


def api_settings(config: NodeConfig) -> Settings:
    limits = Limits(max_payload_bytes=config.max_payload_bytes)
    return Settings(node_id=config.node_id, limits=limits, defaults=Defaults(lease_ms=config.lease_ms),
                    max_body_bytes=config.max_body_bytes, propose_timeout_s=config.propose_timeout_ms / 1000,
                    tls_ca=config.tls_ca, metrics_open=config.metrics_open,
                    body_timeout_s=config.http_timeout_ms / 1000,
                    key_touch_interval_s=max(config.key_touch_interval_ms, 100) / 1000,
                    catch_up_wait_s=config.catch_up_wait_ms / 1000)


def validate(config: NodeConfig) -> None:
    if not 100 <= config.lease_ms <= 12 * 3_600_000:
        raise ConfigError("--lease must be between 100ms and 12h")
    if config.retention_ms < 60_000:
        raise ConfigError("--retention must be at least 1m")
    if config.max_payload_bytes > config.max_body_bytes:
        raise ConfigError("--max-payload cannot exceed --max-body")
    if config.http_timeout_ms < 100:
        raise ConfigError("--http-timeout must be at least 100ms")
    if not 1_000 <= config.catch_up_wait_ms <= 600_000:
        raise ConfigError("--catch-up-wait must be between 1s and 10m")
    if config.snapshot_every < 100:
        raise ConfigError("--snapshot-every must be at least 100")
    if not 0 <= config.stall_grace_ms <= 1_000:  # must stay below the leader's own step-down (leader_fallback_s)
        raise ConfigError("--stall-grace must be between 0 and 1s")


async def run(config: NodeConfig) -> int:
    validate(config)
    if not config.fsync:
        log.warning("fsync is OFF (--no-fsync): acknowledged writes can be lost on power loss or an OS crash")
    gctune.configure()
    if not malloc_tune.fix_mmap_threshold():
        log.info("not glibc: malloc's mmap threshold left as it is")
    clock = Clock(config.clock_offset_ms)
    replica = Replica(replica_config(config), clock=clock)
    await replica.start()
    gctune.freeze()
    freezer = asyncio.get_running_loop().create_task(_freeze_periodically())
    lag_watch = asyncio.get_running_loop().create_task(_watch_loop_lag())
    if config.debug_routes:
        log.warning("--debug-routes: fault-injection routes (/debug/clock, /debug/partition) are ENABLED")
    if config.no_auth:
        log.warning("*** --no-auth: EVERY REQUEST IS ACCEPTED WITHOUT AN API KEY. Development only. ***")
    app = create_app(api_settings(config), replica, debug_routes=config.debug_routes, admin_key=config.admin_key,
                     no_auth=config.no_auth)
    # keepalive_timeout also closes a connection that never completes a request (slow or idle clients)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=config.http_timeout_ms / 1000)
    await runner.setup()
    ssl_context = None
    if config.tls_cert:
        import ssl
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(config.tls_cert, config.tls_key)
    site = web.TCPSite(runner, config.http_host, config.http_port, backlog=1024, reuse_address=True,
                       shutdown_timeout=10.0, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot serve HTTP on %s:%s: %s", config.http_host, config.http_port, exc)
        await runner.cleanup()
        await replica.close()
        return 1
    log.info("node %s serving HTTP on %s:%s, Raft on %s (%d members)", config.node_id, config.http_host,
             config.http_port, config.raft_addr, len(config.members))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: no new requests, finishing in-flight ones")
    freezer.cancel()
    lag_watch.cancel()
    await runner.cleanup()
    await replica.close()
    log.info("stopped")
    return 0


async def _watch_loop_lag(every_s: float = 0.1, slow_s: float = 0.5) -> None:
    """Log when the event loop was blocked (every request and proposal waits for it), at most every 10 s."""
    loop = asyncio.get_running_loop()
    last_log = 0.0
    while True:
        started = loop.time()
        await asyncio.sleep(every_s)
        late = loop.time() - started - every_s
        if late > slow_s and loop.time() - last_log > 10.0:
            last_log = loop.time()
            log.warning("event loop blocked for %.2f s", late)


async def _freeze_periodically() -> None:
    while True:
        await asyncio.sleep(gctune.FREEZE_EVERY_S)
        gctune.freeze()


def install_fast_loop() -> str:
    """uvloop (libuv) when available: the event loop and socket transports cost a fraction of asyncio's."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    uvloop.install()
    return "uvloop"


def serve(config: NodeConfig) -> int:
    setup_logging(config.log_level)
    log.info("event loop: %s", install_fast_loop())
    try:
        return asyncio.run(run(config))
    except (ConfigError, InsecureRaftRefused) as exc:
        log.error("%s", exc)
        return 2
