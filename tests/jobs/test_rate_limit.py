from __future__ import annotations

from engine.api.rate_limit import retry_after_header
from engine.jobs.rate_limit import RateLimiter


def test_burst_then_refill() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert all(limiter.acquire("k", 3) == 0 for _ in range(3))
    wait = limiter.acquire("k", 3)
    assert 19.9 < wait <= 20.0  # 3 per minute: one every 20 s
    assert retry_after_header(wait) == "20"
    now[0] += 20.0
    assert limiter.acquire("k", 3) == 0
    assert limiter.acquire("other", 3) == 0  # buckets are per key
