"""An endpoint's typical run time, kept in memory (embedded) or in Redis (a fleet): both the median of
its last 50 runs, each endpoint apart."""

from __future__ import annotations

import asyncio
import statistics

import pytest

from engine.jobs.durations import WINDOW, Durations, MemoryDurations, RedisDurations, expected_wait


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_the_typical_run_is_the_median_of_the_last_50(kind: str, redis_url: str) -> None:
    runs = [float(n % 7) + n / 100 for n in range(80)]

    async def main() -> tuple[float | None, float | None, float | None]:
        durations: Durations = MemoryDurations() if kind == "memory" else RedisDurations(redis_url)
        try:
            before = await durations.typical("a")
            for seconds in runs:
                await durations.observe("a", seconds)
            await durations.observe("b", 100.0)
            return before, await durations.typical("a"), await durations.typical("b")
        finally:
            await durations.close()

    before, typical, other = asyncio.run(main())
    assert WINDOW == 50
    assert before is None
    assert typical == pytest.approx(statistics.median(runs[-50:]))
    assert other == 100.0


def test_the_wait_counts_the_jobs_ahead_shared_among_the_workers() -> None:
    assert expected_wait(0, 1, 2.0) == 2.0  # next: its own run
    assert expected_wait(3, 1, 2.0) == 8.0  # three runs ahead, then its own
    assert expected_wait(3, 2, 2.0) == 4.0  # two workers: one more round, then its own
    assert expected_wait(3, 0, 2.0) == 8.0  # no worker alive counts as one
