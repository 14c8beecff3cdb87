"""Typed keys for what the app stores (aiohttp AppKey)."""
from __future__ import annotations

from aiohttp import web

from raftqueue.api.context import Context

CTX = web.AppKey("raftqueue_context", Context)
