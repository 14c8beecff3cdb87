"""Retry delays: exponential from the job's base, capped, with jitter that is a hash, never `random`.

Every replica must compute the same delay, and two jobs failing together should not retry together, so the
jitter comes from blake2b(job id, attempt): the delay is spread over [50 %, 100 %] of the exponential value.
"""
from __future__ import annotations

import hashlib


def retry_delay_ms(job_id: str, attempt: int, base_ms: int, max_ms: int) -> int:
    exponent = min(max(attempt - 1, 0), 62)
    full = min(max_ms, base_ms * (1 << exponent))
    digest = hashlib.blake2b(f"{job_id}:{attempt}".encode(), digest_size=8).digest()
    fraction = int.from_bytes(digest, "big") / 2 ** 64  # [0, 1)
    return int(full * (0.5 + 0.5 * fraction))
