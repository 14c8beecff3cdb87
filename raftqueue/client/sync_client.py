"""`Client`: the blocking SDK. The same methods as `AsyncClient`, run on a private event loop in a daemon
thread, so it works from any plain Python program (and from threads) without asyncio knowledge."""
from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Sequence
from typing import Any

from raftqueue.client.async_client import _UNSET, AsyncClient


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="raftqueue-client", daemon=True)
        self.thread.start()

    def run(self, coro) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


class Client:
    """Blocking client: `Client(urls, key)`; `with Client() as client: client.submit({...})`."""

    def __init__(self, urls: str | Sequence[str] | None = None, key: Any = _UNSET,
                 **options: Any) -> None:
        self._loop = _LoopThread()
        self._async = AsyncClient(urls, key, **options)

    @property
    def urls(self) -> list[str]:
        return self._async.urls

    @property
    def node_url(self) -> str:
        """The node this client is using now."""
        return self._async.node_url

    @property
    def key(self) -> str | None:
        return self._async.key

    def close(self) -> None:
        if self._loop.loop.is_running():
            self._loop.run(self._async.close())
            self._loop.stop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def iter_jobs(self, **filters: Any):
        """Every job matching the filters (see AsyncClient.iter_jobs), fetched page by page."""
        cursor, page_size = None, filters.pop("page_size", 500)
        while True:
            page = self.list(cursor=cursor, limit=page_size, **filters)
            yield from page.jobs
            if not page.next_cursor:
                return
            cursor = page.next_cursor


def _blocking(name: str):
    method = getattr(AsyncClient, name)

    @functools.wraps(method)
    def call(self: Client, *args: Any, **kwargs: Any) -> Any:
        return self._loop.run(method(self._async, *args, **kwargs))
    return call


for _name, _member in inspect.getmembers(AsyncClient, inspect.iscoroutinefunction):
    if not _name.startswith("_") and _name not in ("close",):
        setattr(Client, _name, _blocking(_name))
