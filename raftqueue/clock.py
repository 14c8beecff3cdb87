"""The node's wall clock in milliseconds, with an adjustable offset (the chaos harness skews it on purpose)."""
from __future__ import annotations

import time


class Clock:
    def __init__(self, offset_ms: int = 0) -> None:
        self.offset_ms = offset_ms

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset_ms
