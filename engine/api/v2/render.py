"""How v2 bodies write times: RFC 3339 date-times in UTC (the specification's `format: date-time`)."""

from __future__ import annotations

from datetime import UTC, datetime


def timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
