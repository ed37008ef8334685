"""Per-key request rate limits in one process's memory (the embedded store's): a token bucket that
refills continuously, burst up to a minute's worth. A fleet counts them in Redis (engine.jobs.redis_store)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str, per_minute: int) -> float:
        """Take one token; returns 0 when allowed, else the seconds until a token is free."""
        if per_minute <= 0:
            return 0.0
        rate = per_minute / 60.0
        now = self._clock()
        with self._lock:
            bucket = self._buckets.setdefault(key, _Bucket(float(per_minute), now))
            bucket.tokens = min(float(per_minute), bucket.tokens + (now - bucket.updated) * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / rate
