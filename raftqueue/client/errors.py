"""Typed exceptions for the SDK. Each carries the HTTP status and the API's error code (API.md, Conventions)."""
from __future__ import annotations


class RaftqueueError(Exception):
    """Any error answer from a node, or a failure to reach one. `code` is the API error code."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"


class ValidationError(RaftqueueError):
    """400: the request was refused as written (the message names the field); retrying will not help."""


class Unauthorized(RaftqueueError):
    """401: no key, or the key is unknown or revoked."""


class Forbidden(RaftqueueError):
    """403: the key lacks the scope this route needs."""


class NotFound(RaftqueueError):
    """404: no such job or key."""


class NoJobs(NotFound):
    """404 `no_jobs`: nothing runnable within wait_ms (lease only)."""


class Conflict(RaftqueueError):
    """409: wrong state, or a stale lease token (the lease expired and the job went to someone else)."""


class PayloadTooLarge(RaftqueueError):
    """413."""


class Overloaded(RaftqueueError):
    """429: back-pressure; retried by the client."""


class Unavailable(RaftqueueError):
    """503 (no leader, election in progress) or no node could be reached; retried by the client."""


class CommitTimeout(RaftqueueError):
    """504: the write may or may not have been applied. Submits are retried with the same idempotency key."""


_BY_STATUS: dict[int, type[RaftqueueError]] = {400: ValidationError, 401: Unauthorized, 403: Forbidden,
                                               404: NotFound, 409: Conflict, 413: PayloadTooLarge,
                                               429: Overloaded, 503: Unavailable, 504: CommitTimeout}


def error_for(status: int, body: object) -> RaftqueueError:
    """The exception for an error answer; `body` is the parsed JSON (or text) the node sent."""
    code, message = "error", f"HTTP {status}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        code = str(body["error"].get("code", code))
        message = str(body["error"].get("message", message))
    elif isinstance(body, str) and body:
        message = body[:500]
    if code == "no_jobs":
        return NoJobs(message, status=status, code=code)
    cls = _BY_STATUS.get(status, Unavailable if status >= 500 else RaftqueueError)
    return cls(message, status=status, code=code)
