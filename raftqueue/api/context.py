"""What every handler needs, in one object stored on the app; plus the write and read paths.

Write path (`write`): on the leader, validate -> propose -> render; on a follower, validate and plan here and
send the leader only the commands (routes whose plan is pure), or proxy the request.
While there is no leader, wait a bounded time for one, then answer 503 no_leader with Retry-After.
Read path (`read`): `?consistency=stale|leader|linearizable` and `?min_index=N` (read-your-writes anywhere).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from raftqueue.api.errors import ApiError, store_error
from raftqueue.api import auth
from raftqueue.api.batch_forward import BatchForwarder, LeaderRetry, batch_key
from raftqueue.api.forward import ForwardBroken, ForwardNotSent
from raftqueue.api.validation import Defaults, Limits, query_int
from raftqueue.raft.errors import (CommitUnknown, NoLeader, NotCommitted, NotLeader, Overloaded,
                                   ReplicaClosed)
from raftqueue.replica import Member, Replica

# A plan for one write: the commands to propose, and how to turn (index, results) into a response.
Render = Callable[[int, list], web.Response]
Plan = tuple[list, Render]


@dataclass
class Settings:
    node_id: str
    limits: Limits = field(default_factory=Limits)
    defaults: Defaults = field(default_factory=Defaults)
    max_body_bytes: int = 16 * 1024 * 1024
    body_timeout_s: float = 30.0
    propose_timeout_s: float = 5.0
    leader_wait_s: float = 3.0
    read_wait_s: float = 5.0
    forward_timeout_s: float = 10.0
    tls_ca: str | None = None        # verify other nodes' HTTPS certificates with this CA bundle
    metrics_open: bool = False
    key_touch_interval_s: float = 60.0  # how often key uses are written to the log (last_used_at)
    catch_up_wait_s: float = 20.0  # how long an add waits for the new node to catch up before answering 202


class Context:
    def __init__(self, settings: Settings, replica: Replica) -> None:
        self.settings = settings
        self.replica = replica
        self.limits = settings.limits
        self.defaults = settings.defaults
        ssl_context = True  # https peers: verified against the system CAs, or --tls-ca
        if settings.tls_ca:
            import ssl
            ssl_context = ssl.create_default_context(cafile=settings.tls_ca)
        self._ssl = ssl_context
        self._peer_session: aiohttp.ClientSession | None = None
        self.batch_key = batch_key(replica.config.secret)
        self.batcher = BatchForwarder(settings.node_id, self.batch_key, lambda: replica.leader,
                                      settings.forward_timeout_s, ssl=ssl_context)
        self.extras: dict = {}  # seams for later pieces (auth, metrics, long-poll, events)
        self.authenticator: auth.Authenticator | None = None  # set by create_app; None with --no-auth

    # ----- node-to-node status calls (GET /cluster/nodes) ----------------------------------------------------
    def start_peer_session(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=8, keepalive_timeout=30, ttl_dns_cache=5,
                                         ssl=self._ssl)
        self._peer_session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",),
                                                   timeout=aiohttp.ClientTimeout(total=5, sock_connect=1.0))

    @property
    def peer_session(self) -> aiohttp.ClientSession:
        assert self._peer_session is not None, "start_peer_session() first"
        return self._peer_session

    async def close_peer_session(self) -> None:
        if self._peer_session is not None:
            await self._peer_session.close()

    # ----- bodies --------------------------------------------------------------------------------------------
    async def body(self, request: web.Request, limit: int | None = None) -> bytes:
        limit = limit or self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise ApiError(413, "payload_too_large", f"the body is {request.content_length} bytes; "
                                                     f"the limit is {limit} bytes")
        try:
            async with asyncio.timeout(self.settings.body_timeout_s):  # no extra task per request (wait_for makes one)
                data = await request.read()
        except TimeoutError:
            raise ApiError(408, "request_timeout", f"the body did not arrive within {self.settings.body_timeout_s:.0f} s"
                           ) from None
        except RequestPayloadError as exc:  # e.g. Content-Encoding: gzip on a body that is not gzip: the client's
            # The connection's stream is in an unknown state: aiohttp closes it. Say so, so that a client does not
            # send its next request on it.
            raise ApiError(400, "bad_request", f"the body could not be read: {exc}",
                           {"Connection": "close"}) from None
        if len(data) > limit:
            raise ApiError(413, "payload_too_large", f"the body is over {limit} bytes")
        return data

    # ----- writes --------------------------------------------------------------------------------------------
    def raft_headers(self, index: int, leader_id: str | None = None) -> dict[str, str]:
        return {"X-Raft-Index": str(index), "X-Raft-Leader": leader_id or self.settings.node_id}

    async def write(self, request: web.Request, plan: Callable[[bytes], Plan], body: bytes | None = None,
                    pure_plan: bool = False) -> web.Response:
        """Run a write here if leader, else proxy it; bounded wait through elections.

        `pure_plan`: the plan reads no state and its render has no side effects, so on a follower it runs
        here (bad input is refused without a trip to the leader) and only the commands go to the leader."""
        if body is None:
            body = await self.body(request)
        planned: Plan | None = None

        async def here() -> web.Response | None:
            commands, render = plan(body)  # validation errors surface here as 4xx
            outcome = await self.propose_here(commands)
            if outcome is None:  # certainly not applied, try again once a leader is known
                return None
            index, results = outcome
            response = render(index, results)
            response.headers.update(self.raft_headers(index))
            return response

        async def there(leader: Member) -> web.Response:
            nonlocal planned
            if planned is None:
                planned = plan(body)
            commands, render = planned
            index, results, leader_id = await self.batcher.propose(request, commands, leader)
            response = render(index, results)
            response.headers.update(self.raft_headers(index, leader_id))
            return response

        return await self.on_leader(request, body, here, there if pure_plan else None)

    async def on_leader(self, request: web.Request, body: bytes, here: Callable[[], Awaitable[web.Response | None]],
                        there: Callable[[Member], Awaitable[web.Response]] | None = None) -> web.Response:
        """Answer with `here()` if this node leads (None: it lost leadership meanwhile, try again), else with
        `there(leader)` or, without it, the request proxied whole to the leader; waits through elections."""
        replica = self.replica
        deadline = time.monotonic() + self.settings.leader_wait_s
        forwarded = request.get("forwarded", False)
        while True:
            if replica.is_leader:
                response = await here()
                if response is not None:
                    return response
            else:
                leader = replica.leader
                if leader is not None and leader.id != self.settings.node_id and not forwarded:
                    try:
                        if there is None:
                            return await self.batcher.forward(request, body, leader)
                        return await there(leader)
                    except (ForwardNotSent, LeaderRetry):
                        pass  # the leader is gone, or was no longer leader: wait for the next one
                    except ForwardBroken as exc:
                        raise ApiError(504, "commit_timeout",
                                       f"the leader stopped answering ({exc}); the write may or may not have "
                                       "been applied: retry with the same idempotency_key") from None
            if time.monotonic() >= deadline:
                raise ApiError(503, "no_leader", "no leader is available (an election is in progress); retry",
                               {"Retry-After": "1"})
            await asyncio.sleep(0.02)

    async def propose_here(self, commands: list, unknown: str = "retry with the same idempotency_key",
                           ) -> tuple[int, list] | None:
        """Propose on this node as leader: (index, results); None when the commands were certainly not applied
        (this node lost leadership: try again); ApiError for an unknown outcome (504, `unknown` says what the
        client should do), overload (429) or shutdown (503)."""
        try:
            return await self.replica.propose(commands, timeout=self.settings.propose_timeout_s)
        except (NotLeader, NoLeader, NotCommitted):
            return None
        except CommitUnknown as exc:
            raise ApiError(504, "commit_timeout", f"{exc}; {unknown}") from None
        except Overloaded as exc:
            raise ApiError(429, "overloaded", str(exc), {"Retry-After": "1"}) from None
        except ReplicaClosed:
            raise ApiError(503, "no_leader", "this node is shutting down", {"Retry-After": "1"}) from None

    async def propose_forwarded(self, item: dict, body: bytes) -> tuple[dict, bytes]:
        """The leader's side of a follower's planned write (batch_forward): check the client's key against
        the route's scope, stamp and propose the commands, answer (index, results) for the follower to render."""
        try:
            if self.authenticator is not None:
                method, route = item["r"]
                scope = auth.ROUTE_SCOPES.get((str(method), str(route)), "cluster:admin")
                token = item.get("t")
                identity = self.authenticator.authenticate(str(token)) if token else None
                auth.check_identity(identity, scope)
            commands = orjson.loads(body)
            if not isinstance(commands, list) or not commands or not all(isinstance(c, dict) for c in commands):
                raise ApiError(400, "bad_request", "a planned write must be a non-empty list of commands")
            unknown = self.replica.state.unknown_command(commands)
            if unknown is not None:  # a newer follower planned it: every replica of this build would stop at it
                raise ApiError(501, "not_supported", f"the leader's build cannot apply this write ({unknown}); "
                                                     "upgrade every node to the same build")
            if len(commands) == 1 and commands[0].get("kind") == "lease":
                claim = await self.extras["lease_gate"].claim(commands[0])
                if claim is None:  # nothing left to lease: answer empty as of this node's state, write nothing
                    if not self.replica.is_leader:
                        return {"s": 503, "e": "retry", "m": "this node is no longer the leader"}, b""
                    return {"s": 200, "i": self.replica.applied_index, "l": self.settings.node_id}, b'[{"jobs":[]}]'
                with claim:
                    outcome = await self.propose_here(commands)
            else:
                outcome = await self.propose_here(commands)
        except ApiError as exc:
            error = exc
        except (KeyError, TypeError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
            error = ApiError(400, "bad_request", f"a malformed planned write ({type(exc).__name__})")
        else:
            if outcome is None:
                return {"s": 503, "e": "retry", "m": "this node is no longer the leader"}, b""
            index, results = outcome
            return {"s": 200, "i": index, "l": self.settings.node_id}, orjson.dumps(results)
        return {"s": error.status, "e": error.code, "m": error.message, "h": error.headers}, b""

    # ----- reads ---------------------------------------------------------------------------------------------
    async def read(self, request: web.Request, local: Callable[[], Awaitable[web.Response] | web.Response],
                   default: str = "stale") -> web.Response:
        """Serve a read with the consistency the client asked for (see API.md, Conventions)."""
        consistency = request.query.get("consistency")
        if consistency not in (None, "stale", "leader", "linearizable"):
            raise ApiError(400, "validation_error", "consistency: must be stale, leader or linearizable")
        min_index = request.query.get("min_index")
        if min_index is not None:
            wanted = query_int(min_index, "min_index", 0, 10 ** 18 - 1)
            if not await self.replica.wait_applied(wanted, self.settings.read_wait_s):
                known = self.replica.known_commit_index
                if wanted > known and self.replica.leader is not None:
                    # after the wait this node has heard the leader's commit index: N was never committed
                    raise ApiError(400, "validation_error",
                                   f"min_index: index {wanted} has not been committed (the cluster is at {known})")
                raise ApiError(503, "stale_replica", f"this node has not applied index {wanted} yet; retry",
                               {"Retry-After": "1"})
            if consistency is None:
                consistency = "stale"
        consistency = consistency or default
        if consistency == "stale":
            return await _maybe_await(local())
        forwarded = request.get("forwarded", False)
        deadline = time.monotonic() + self.settings.leader_wait_s
        while True:
            if self.replica.is_leader:
                if consistency == "linearizable":
                    try:
                        await self.replica.barrier(self.settings.propose_timeout_s)
                    except (NotLeader, NoLeader, NotCommitted):
                        await asyncio.sleep(0.02)
                        continue
                    except CommitUnknown:
                        raise ApiError(504, "commit_timeout", "could not confirm leadership in time") from None
                return await _maybe_await(local())
            leader = self.replica.leader
            if leader is not None and leader.id != self.settings.node_id and not forwarded:
                try:
                    return await self.batcher.forward(request, b"", leader)
                except (ForwardNotSent, ForwardBroken):
                    pass  # reads are safe to retry
            if time.monotonic() >= deadline:
                raise ApiError(503, "no_leader", "no leader is available for a leader read; retry, or ask "
                                                 "with ?consistency=stale", {"Retry-After": "1"})
            await asyncio.sleep(0.02)

    def store_result(self, result: dict) -> dict:
        """A store result, or the ApiError its error code maps to."""
        if "error" in result:
            raise store_error(result["error"])
        return result


async def _maybe_await(value):
    if asyncio.iscoroutine(value):
        return await value
    return value
