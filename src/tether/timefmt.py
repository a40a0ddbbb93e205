"""Docker's time formats: RFC 3339 with nanoseconds (Created, StartedAt, FinishedAt)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_iso() -> str:
    """Docker's Created format: RFC 3339 with nanoseconds and the local offset."""
    t = datetime.now(UTC).astimezone()
    base = t.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{t.microsecond:06d}000"
    off = t.strftime("%z")
    off = "Z" if off in ("+0000", "") else f"{off[:3]}:{off[3:]}"
    return f"{base}.{frac}{off}"


def iso_utc(epoch_seconds: float) -> str:
    """A UNIX time as Docker's FinishedAt (UTC, nanoseconds)."""
    t = time.gmtime(epoch_seconds)
    frac = int((epoch_seconds % 1) * 1e9)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{frac:09d}Z"
