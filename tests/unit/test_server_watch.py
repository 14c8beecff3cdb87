"""The node logs when its event loop was blocked: every request and every proposal waits for that loop."""
from __future__ import annotations

import asyncio
import logging
import time

from raftqueue.server import _watch_loop_lag


async def test_a_blocked_event_loop_is_logged_once(caplog):
    caplog.set_level(logging.WARNING, logger="raftqueue.server")
    watcher = asyncio.get_running_loop().create_task(_watch_loop_lag(every_s=0.02, slow_s=0.2))
    await asyncio.sleep(0.1)
    assert not caplog.records  # an idle loop is not late
    time.sleep(0.4)  # what a blocking call in a handler would do
    await asyncio.sleep(0.1)
    time.sleep(0.4)  # a second stall within 10 s is not logged again
    await asyncio.sleep(0.1)
    watcher.cancel()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("event loop blocked for 0.")
