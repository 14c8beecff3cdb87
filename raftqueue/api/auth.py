"""Who may call what: API keys, scopes per route, the bootstrap admin key, and authenticated forwarding.

Keys look like `<type>_<key_id>_<secret>` (e.g. `worker_9f3a1c2b7d4e_Zq...`); the cluster stores only
`salt` and `sha256(salt + ":" + secret)` (store/keys.py), compared in constant time. The bootstrap admin key
(RAFTQUEUE_ADMIN_KEY, given to every node) lives only in each node's memory, as a hash.

Every route has one required scope in `ROUTE_SCOPES` (or OPEN); a route missing from the table needs
`cluster:admin`, so forgetting an entry fails closed. A key that a follower does not know yet (created a
moment ago, not applied there) is not refused by the follower: the request goes to the leader, which decides.

Forwarding: a follower sends what it forwards in frames signed with a key derived from the cluster secret
(api/batch_forward.py); only those count as forwarded. The client's own key travels with each forwarded
request or planned write, and the leader authenticates it again.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from raftqueue.api.errors import ApiError

TYPES = ("client", "worker", "admin")
ALL_SCOPES = frozenset({"jobs:submit", "jobs:read", "jobs:cancel", "jobs:lease", "jobs:ack", "jobs:admin",
                        "keys:read", "keys:admin", "cluster:admin", "metrics:read"})
TYPE_SCOPES = {
    # keys:read: list one's own keys and revoke them (the seed's clients do); never an admin key (store/keys.py).
    # Cancelling a job is an admin's: jobs have no owner, so a client could cancel any team's jobs.
    "client": ["jobs:submit", "jobs:read", "keys:read"],
    "worker": ["jobs:lease", "jobs:ack", "jobs:read", "keys:read"],
    "admin": sorted(ALL_SCOPES),
}
OPEN = "open"


def scopes_of(key_type: str) -> list[str]:
    """What a key of `key_type` may do in this build (not the list recorded when the key was made)."""
    return TYPE_SCOPES.get(key_type, [])
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="raftqueue"'}

# (method, canonical route) -> scope
ROUTE_SCOPES: dict[tuple[str, str], str] = {
    ("GET", "/health"): OPEN, ("GET", "/live"): OPEN, ("GET", "/ready"): OPEN, ("GET", "/openapi.json"): OPEN,
    ("GET", "/"): OPEN, ("GET", "/dashboard/{name}"): OPEN,
    ("POST", "/_internal/forward"): OPEN,            # its own HMAC; every item inside is authenticated
    ("POST", "/_internal/touch-keys"): OPEN,         # only from a node (forwarded under the cluster secret)
    ("POST", "/jobs"): "jobs:submit", ("POST", "/jobs/batch"): "jobs:submit",
    ("POST", "/jobs/lease"): "jobs:lease", ("POST", "/jobs/ack"): "jobs:ack",
    ("POST", "/jobs/{job_id}/ack"): "jobs:ack", ("POST", "/jobs/{job_id}/nack"): "jobs:ack",
    ("POST", "/jobs/{job_id}/extend"): "jobs:ack", ("POST", "/jobs/{job_id}/release"): "jobs:ack",
    ("POST", "/jobs/{job_id}/cancel"): "jobs:cancel",
    ("POST", "/jobs/{job_id}/retry"): "jobs:admin", ("POST", "/jobs/dead/retry"): "jobs:admin",
    ("POST", "/queues/{name}/pause"): "jobs:admin", ("POST", "/queues/{name}/resume"): "jobs:admin",
    ("GET", "/jobs/{job_id}"): "jobs:read", ("GET", "/jobs"): "jobs:read", ("GET", "/stats"): "jobs:read",
    ("GET", "/events"): "jobs:read", ("GET", "/cluster"): "jobs:read",
    ("GET", "/cluster/nodes"): "jobs:read",
    ("GET", "/metrics"): "metrics:read",
    ("POST", "/admin/keys"): "keys:admin", ("GET", "/admin/keys"): "keys:admin",
    ("GET", "/keys"): "keys:read", ("DELETE", "/keys/{key_id}"): "keys:read",
    ("POST", "/cluster/members"): "cluster:admin", ("DELETE", "/cluster/members/{member_id}"): "cluster:admin",
    ("POST", "/debug/clock"): "cluster:admin", ("POST", "/debug/partition"): "cluster:admin",
}



@dataclass(frozen=True)
class Identity:
    key_id: str
    type: str
    owner_id: str
    scopes: frozenset

    @property
    def is_admin(self) -> bool:
        return self.type == "admin"


DEV_IDENTITY = Identity("no-auth", "admin", "no-auth", ALL_SCOPES)
UNKNOWN_KEY = object()  # a well-formed key this node has no record of (yet)


def hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def new_key(key_type: str) -> tuple[str, str, str, str]:
    """(key_id, secret, salt, hash) for a new key; the full key is f"{type}_{key_id}_{secret}"."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    salt = secrets.token_hex(16)
    return key_id, secret, salt, hash_secret(salt, secret)


def parse_key(token: str) -> tuple[str, str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] not in TYPES or not parts[1] or not parts[2] or len(token) > 512:
        return None
    return parts[0], parts[1], parts[2]


def key_id_of(text: str) -> str:
    """DELETE /keys/{key}: the seed passed the whole key; we take its id (or an id as it is)."""
    parsed = parse_key(text)
    return parsed[1] if parsed else text


class Authenticator:
    def __init__(self, admin_key: str | None, read_keys) -> None:
        self._admin_digest = hashlib.sha256(admin_key.encode()).digest() if admin_key else None
        self._read_keys = read_keys  # callable(key_id) -> record dict | None, under the store lock
        self.used: dict[str, int] = {}

    def authenticate(self, token: str):
        """Identity, None (refused) or UNKNOWN_KEY (well-formed, no record here: ask the leader)."""
        if self._admin_digest is not None and hmac.compare_digest(
                hashlib.sha256(token.encode()).digest(), self._admin_digest):
            return Identity("bootstrap", "admin", "admin", ALL_SCOPES)
        parsed = parse_key(token)
        if parsed is None:
            return None
        key_type, key_id, secret = parsed
        record = self._read_keys(key_id)
        if record is None:
            return UNKNOWN_KEY
        if record["revoked_at"] is not None or record["type"] != key_type:
            return None
        if not hmac.compare_digest(hash_secret(record["salt"], secret), record["hash"]):
            return None
        # The type's scopes as this build defines them, not those recorded when the key was made: a key keeps no
        # scope that a later build took from its type, and an admin key gets every scope a later build adds.
        return Identity(key_id, record["type"], record["owner_id"], frozenset(scopes_of(record["type"])))

    def note_use(self, identity: Identity, now_ms: int) -> None:
        if identity.key_id not in ("bootstrap", "no-auth"):
            self.used[identity.key_id] = now_ms

    def take_used(self) -> dict[str, int]:
        """Key uses since the last call, rounded down to the minute (last_used_at is coarse on purpose)."""
        used, self.used = self.used, {}
        return {key_id: ms - ms % 60_000 for key_id, ms in used.items()}


def check_identity(identity, scope: str) -> Identity:
    """`identity` if it holds `scope`; 401 for a refused key (None or UNKNOWN_KEY), 403 for a missing scope."""
    if identity is None or identity is UNKNOWN_KEY:
        raise ApiError(401, "unauthorized", "the API key is invalid or revoked", CHALLENGE)
    if scope not in identity.scopes:
        raise ApiError(403, "forbidden", f"a {identity.type} key does not have the scope {scope}")
    return identity


def bearer(request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":  # the scheme is case-insensitive (RFC 7235)
        return header[7:].strip() or None
    return None
