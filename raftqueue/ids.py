"""Job ids: UUIDv7 text made on the leader from its clock, so ids sort by creation time.

A 12-bit sequence keeps ids made within one millisecond in order; when the clock stands still or steps back
(a new leader with a slower clock, an NTP step) the generator keeps counting from the last time it used, so
ids from one leader never go backwards. 62 random bits keep ids from different leaders apart.
"""
from __future__ import annotations

import os
import random
import threading

_MS_MASK = (1 << 48) - 1


class IdGenerator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._seq = 0
        self._random = random.Random(os.urandom(32))  # ids must be unique, not secret

    def new(self, now_ms: int) -> str:
        with self._lock:
            if now_ms <= self._last_ms:
                now_ms = self._last_ms
                self._seq += 1
                if self._seq > 0xFFF:
                    now_ms += 1
                    self._seq = 0
            else:
                self._seq = 0
            self._last_ms = now_ms
            seq = self._seq
            rand = self._random.getrandbits(62)
        value = ((now_ms & _MS_MASK) << 80) | (0x7 << 76) | (seq << 64) | (0b10 << 62) | rand
        h = f"{value:032x}"  # the canonical 8-4-4-4-12 text, without building a uuid.UUID
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
