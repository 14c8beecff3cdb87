"""The listing index files moves lazily (settle); what it lists must be what an eager index would list."""
from __future__ import annotations

import random

import pytest

from raftqueue.store.indexes import ListingIndex
from raftqueue.store.model import Job

STATES = ("READY", "RUNNING", "ACKED", "DEAD")


def _job(i: int) -> Job:
    job = Job()
    job.id, job.queue, job.created_at, job.state = f"j{i:04d}", f"q{i % 2}", 1000 + i // 3, None
    return job


@pytest.mark.parametrize("settle_every", [1, 3, 4096])
def test_lazy_listing_lists_what_an_eager_one_would(settle_every):
    rng = random.Random(settle_every)
    index = ListingIndex()
    index.SETTLE_EVERY = settle_every
    live: dict[str, Job] = {}
    for step in range(3000):
        if not live or rng.random() < 0.3:  # create
            job = _job(step)
            job.state = "READY"
            index.add(job)
            live[job.id] = job
        else:
            job = live[rng.choice(sorted(live))]
            index.remove(job)
            if rng.random() < 0.2:  # purged
                del live[job.id]
                continue
            job.state = rng.choice(STATES)
            index.add(job)
        if step % 97 == 0:  # a reader now and then, as GET /jobs would
            for queue in (None, "q0"):
                for state in (None, "RUNNING"):
                    want = sorted(((j.created_at, j.id) for j in live.values()
                                   if queue in (None, j.queue) and state in (None, j.state)), reverse=True)
                    assert list(index.newest_first(queue, state, None)) == want
    expected: dict = {}
    for job in live.values():
        expected.setdefault((job.queue, job.state), set()).add((job.created_at, job.id))
    assert {key: set(lst) for key, lst in index.lists.items()} == expected
