"""A fleet against the embedded default: N jobs on a model-free endpoint, none lost, none completed twice.

    .venv/bin/python bench/fleet.py [--jobs 2000] [--apis 2] [--workers 4] [--concurrency 64]
        [--endpoint solid-color] [--json-only]

Runs the same load twice in one go, on this machine:
- embedded: one `engine serve` process (SQLite store, its own worker), the default;
- fleet: a redis-server started here, `--apis` `engine serve --broker` processes (no worker) and
  `--workers` `engine worker --broker` processes, submits spread over the API processes in turn.

Each run submits `--jobs` requests to the queued Segmind route (`POST /v2/<endpoint>`, an 8x8 image)
from `--concurrency` clients, then reads every job back from the store: a job not COMPLETED is lost;
a job whose log says "completed" more than once ran twice to completion (a job started twice, after a
worker lost its lease, is counted apart: that is at-least-once execution working). Throughput is jobs
per second from the first submission to the last completion; queue latency is each job's wait from
submission to the start of its run (p50, p99).

The processes come from tests/fleet/processes.py (the fleet tests start theirs the same way). On a
machine with few cores the fleet's processes share them with each other and with this client, so the
figures compare the two set-ups on equal hardware, not the fleet at its scale.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine.jobs.redis_store import RedisStore  # noqa: E402
from engine.jobs.sqlite_async import AsyncSqliteStore  # noqa: E402
from engine.jobs.sqlite_store import SqliteStore  # noqa: E402
from engine.jobs.store import JobStore  # noqa: E402
from engine.jobs.types import Job, JobStatus  # noqa: E402
from tests.fleet.processes import fleet  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

FINISH_SECONDS = 1800.0
START_SECONDS = 1200.0
"""Six processes importing torch at once on a small busy machine take minutes to start."""


@dataclass(frozen=True)
class Outcome:
    setup: str
    processes: str
    jobs: int
    completed: int
    lost: int
    completed_twice: int
    started_twice: int
    submit_seconds: float
    total_seconds: float
    jobs_per_second: float
    queue_p50_ms: float
    queue_p99_ms: float


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def _submit(urls: list[str], endpoint: str, jobs: int, concurrency: int) -> list[str]:
    ids: list[str] = []
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one_client() -> None:
            nonlocal next_index
            while next_index < jobs:
                index = next_index
                next_index += 1
                body = {"width": 8, "height": 8, "color": index % 0xFFFFFF}
                answer = await client.post(f"{urls[index % len(urls)]}/v2/{endpoint}", json=body)
                answer.raise_for_status()
                ids.append(answer.json()["request_id"])

        await asyncio.gather(*(one_client() for _ in range(concurrency)))
    return ids


async def _finished(store: JobStore, ids: list[str]) -> list[Job]:
    deadline = time.monotonic() + FINISH_SECONDS
    while True:
        statuses = await store.statuses(ids)
        if all(status.terminal for status in statuses.values()) and len(statuses) == len(ids):
            break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    jobs = [await store.get(job_id) for job_id in ids]
    return [job for job in jobs if job is not None]


async def _measure(
    setup: str, processes: str, store: JobStore, ids: list[str], submit_seconds: float
) -> Outcome:
    jobs = await _finished(store, ids)
    completed = [job for job in jobs if job.status == JobStatus.COMPLETED]
    twice = started_twice = 0
    for job in jobs:
        lines = [line.message for line in await store.logs(job.id)]
        twice += sum(line.startswith("completed in") for line in lines) > 1
        started_twice += lines.count("started") > 1
    waits = [job.started_at - job.created_at for job in completed if job.started_at is not None]
    first = min(job.created_at for job in jobs)
    last = max(job.finished_at or 0.0 for job in completed) if completed else first
    total = last - first
    return Outcome(
        setup=setup,
        processes=processes,
        jobs=len(ids),
        completed=len(completed),
        lost=len(ids) - len(completed),
        completed_twice=twice,
        started_twice=started_twice,
        submit_seconds=round(submit_seconds, 2),
        total_seconds=round(total, 2),
        jobs_per_second=round(len(completed) / total, 1) if total > 0 else 0.0,
        queue_p50_ms=round(statistics.median(waits) * 1000, 1) if waits else 0.0,
        queue_p99_ms=round(_percentile(waits, 0.99) * 1000, 1) if waits else 0.0,
    )


async def _load(urls: list[str], args: argparse.Namespace) -> tuple[list[str], float]:
    started = time.monotonic()
    ids = await _submit(urls, args.endpoint, args.jobs, args.concurrency)
    return ids, time.monotonic() - started


def run_embedded(base: Path, args: argparse.Namespace) -> Outcome:
    with fleet(base, None, apis=1, workers=0, start_seconds=START_SECONDS) as running:
        ids, submit_seconds = asyncio.run(_load([running.apis[0][1]], args))

        async def measure() -> Outcome:
            store = AsyncSqliteStore(SqliteStore(base / "data" / "engine.sqlite3"))
            try:
                return await _measure("embedded (SQLite)", "1 serve", store, ids, submit_seconds)
            finally:
                await store.close()

        return asyncio.run(measure())


def run_fleet(base: Path, args: argparse.Namespace) -> Outcome:
    redis = RedisServer(base / "redis").start()
    try:
        with fleet(
            base, redis.url, apis=args.apis, workers=args.workers, start_seconds=START_SECONDS
        ) as running:
            ids, submit_seconds = asyncio.run(_load([url for _, url in running.apis], args))

            async def measure() -> Outcome:
                store = RedisStore(redis.url)
                try:
                    processes = f"{args.apis} serve + {args.workers} worker"
                    return await _measure("fleet (Redis)", processes, store, ids, submit_seconds)
                finally:
                    await store.close()

            return asyncio.run(measure())
    finally:
        redis.stop()


def _table(outcomes: list[Outcome]) -> str:
    columns = [
        ("setup", "setup"),
        ("processes", "processes"),
        ("jobs", "jobs"),
        ("lost", "lost"),
        ("completed_twice", "done twice"),
        ("started_twice", "run twice"),
        ("jobs_per_second", "jobs/s"),
        ("queue_p50_ms", "queue p50 ms"),
        ("queue_p99_ms", "queue p99 ms"),
        ("total_seconds", "total s"),
    ]
    rows = [[title for _, title in columns]]
    rows += [[str(asdict(outcome)[name]) for name, _ in columns] for outcome in outcomes]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--endpoint", default="solid-color")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as scratch:
        root = Path(scratch)
        (root / "embedded").mkdir()
        (root / "fleet").mkdir()
        outcomes: list[Outcome] = []
        for run in (run_embedded, run_fleet):
            outcomes.append(run(root / run.__name__.removeprefix("run_"), args))
            print(json.dumps(asdict(outcomes[-1])), file=sys.stderr, flush=True)  # kept if the next fails
    report: dict[str, Any] = {
        "jobs": args.jobs,
        "endpoint": args.endpoint,
        "results": [asdict(o) for o in outcomes],
    }
    if not args.json_only:
        print(_table(outcomes))
    print(json.dumps(report, indent=2))
    sound = all(o.lost == 0 and o.completed_twice == 0 for o in outcomes)
    return 0 if sound else 1


if __name__ == "__main__":
    raise SystemExit(main())
