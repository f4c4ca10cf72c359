"""Times as alertd writes them: RFC 3339 in UTC with milliseconds. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

# The latest time RFC 3339 (and Python's datetime) can write: the end of year 9999 UTC.
MAX_EPOCH = 253402300799.0


def iso(epoch: float) -> str:
    """RFC 3339 in UTC with milliseconds, e.g. `2026-11-27T10:29:38.896Z`; clamped to years 1970-9999."""
    clamped = min(max(epoch, 0.0), MAX_EPOCH)
    return datetime.fromtimestamp(clamped, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
