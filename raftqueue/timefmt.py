"""Times on the wire: RFC 3339 UTC with milliseconds (`2026-11-23T10:30:00.123Z`); inside: int ms since epoch."""
from __future__ import annotations

import re
from datetime import datetime, timezone

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MIN_MS = 0
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


_last_second = -1
_last_prefix = ""


def to_rfc3339(ms: int | None) -> str | None:
    global _last_second, _last_prefix
    if ms is None:
        return None
    seconds, millis = divmod(int(ms), 1000)
    if seconds != _last_second:  # answers mostly carry times from the same second: format that part once
        _last_prefix = datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second = seconds
    return f"{_last_prefix}{millis:03d}Z"


_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})")


def parse_rfc3339(text: str) -> int:
    """RFC 3339 (any offset; 'Z' or '+00:00'; fraction optional) -> int ms. Raises ValueError."""
    if not isinstance(text, str) or len(text) > 64:
        raise ValueError("expected an RFC 3339 time string")
    value = text.strip()
    if not _RFC3339.fullmatch(value):  # fromisoformat alone also takes week dates, ordinal days, "2026-11-24"...
        raise ValueError("expected an RFC 3339 time, e.g. 2026-11-23T10:30:00Z")
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError("the time needs a UTC offset, e.g. 2026-11-23T10:30:00Z")
    ms = int((dt - _EPOCH).total_seconds() * 1000)
    if not MIN_MS <= ms <= MAX_MS:
        raise ValueError("time out of range")
    return ms
