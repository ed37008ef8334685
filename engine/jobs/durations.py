"""How long an endpoint's jobs take to run, measured, for the wait a queued job is told to expect.

Each finished run's time is kept per endpoint over the last `WINDOW` runs, and the median of them is
the endpoint's typical run: robust to the first run that loads a model and to an odd slow one. The
embedded default keeps them in memory; a fleet keeps them in Redis (a capped list per endpoint), so
every API process estimates from every worker's runs.
"""

from __future__ import annotations

import statistics
from collections import defaultdict, deque
from typing import Protocol

from redis.asyncio import Redis

WINDOW = 50


class Durations(Protocol):
    async def observe(self, endpoint: str, seconds: float) -> None: ...
    async def typical(self, endpoint: str) -> float | None: ...
    async def close(self) -> None: ...


def expected_wait(ahead: int, workers: int, typical: float) -> float:
    """Seconds until a queued job's result: the jobs ahead shared among the workers, then its own run."""
    return (ahead // max(1, workers) + 1) * typical


class MemoryDurations:
    def __init__(self) -> None:
        self._runs: defaultdict[str, deque[float]] = defaultdict(lambda: deque(maxlen=WINDOW))

    async def observe(self, endpoint: str, seconds: float) -> None:
        self._runs[endpoint].append(seconds)

    async def typical(self, endpoint: str) -> float | None:
        runs = self._runs.get(endpoint)
        return statistics.median(runs) if runs else None

    async def close(self) -> None:
        """Nothing to release."""


class RedisDurations:
    def __init__(self, url: str, prefix: str = "engine:") -> None:
        self._redis: Redis = Redis.from_url(url)
        self._prefix = f"{prefix}durations:"

    async def observe(self, endpoint: str, seconds: float) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(self._prefix + endpoint, repr(float(seconds)))
            pipe.ltrim(self._prefix + endpoint, 0, WINDOW - 1)
            await pipe.execute()

    async def typical(self, endpoint: str) -> float | None:
        runs = await self._redis.lrange(self._prefix + endpoint, 0, WINDOW - 1)
        return statistics.median([float(run) for run in runs]) if runs else None

    async def close(self) -> None:
        await self._redis.aclose()
