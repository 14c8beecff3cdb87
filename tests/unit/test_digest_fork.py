"""The state digest of a big store is hashed in a forked child (the lock is held only to fork); it must be the
digest the inline path computes, at the index it was taken."""
from __future__ import annotations

import orjson

from raftqueue.clock import Clock
from raftqueue.replicated_store import ReplicatedStore


def _submit(i: int) -> bytes:
    return orjson.dumps([{"kind": "submit", "v": 1, "now": 1_700_000_000_000 + i, "job_id": f"job-{i:05d}",
                          "payload": '{"n": %d}' % i, "queue": "q"}])


async def test_forked_digest_equals_the_inline_one_and_follows_new_entries():
    state = ReplicatedStore(Clock(), retention_ms=60_000)
    for i in range(1, 301):
        state.apply_entry(_submit(i), i)
    state.INLINE_DIGEST_JOBS = 0  # force the forked path
    forked = await state.digest_async()
    state._digest = None
    assert forked == state.digest()          # inline, under the lock
    assert forked[0] == 300
    state.apply_entry(_submit(301), 301)
    moved = await state.digest_async()
    assert moved[0] == 301 and moved[1] != forked[1]
    assert await state.digest_async() == moved  # cached for the same index
