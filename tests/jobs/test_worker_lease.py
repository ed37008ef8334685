"""Workers of a fleet over one Redis (a real redis-server), each with its own connections as separate
processes have: a worker whose heartbeats stop loses its job to another after the lease, which runs
it to completion, and the first worker's late result is refused; a worker that keeps sending them
keeps its job however long it runs. The graph is real (a slow test node, then SaveImage)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import folders
from engine.diffusion.model_manager import ModelManager
from engine.graph.cache import OutputCache
from engine.graph.execute import Executor
from engine.jobs.broadcast import JobBroadcast
from engine.jobs.outputs import JobOutputs
from engine.jobs.redis_keys import RedisKeyAdmin
from engine.jobs.redis_store import RedisStore
from engine.jobs.types import Job, JobStatus, NewJob
from engine.jobs.worker import Worker
from engine.nodes import create_registry

CUSTOM_NODES = Path(__file__).resolve().parents[1] / "api" / "custom_nodes"


@pytest.fixture
def output_dir(tmp_path: Path) -> Iterator[Path]:
    previous = folders.current()
    folders.configure(base_dir=tmp_path)
    yield folders.get_output_directory()
    folders.use(previous)


def slow_job(seconds: float, key_id: str) -> NewJob:
    job_id = str(uuid.uuid4())
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SlowImages", "inputs": {"images": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": f"jobs/{job_id}"}},
    }
    return NewJob(
        id=job_id,
        endpoint="slow",
        api="segmind",
        params={},
        prompt=prompt,
        output_node="3",
        cost=2,
        key_id=key_id,
        base_url="",
    )


def worker(url: str, output_dir: Path, name: str, heartbeat_seconds: float, lease: float) -> Worker:
    registry, _ = create_registry((CUSTOM_NODES,))
    executor = Executor(registry, OutputCache(0), {"models": ModelManager()})
    store = RedisStore(url, lease_seconds=lease)
    broadcast = JobBroadcast(asyncio.get_running_loop())
    return Worker(
        store,
        executor,
        broadcast,
        JobOutputs(output_dir),
        worker_id=name,
        heartbeat_seconds=heartbeat_seconds,
    )


async def finished(store: RedisStore, job_id: str, timeout: float) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = await store.get(job_id)
        if job is not None and job.status.terminal:
            return job
        assert time.monotonic() < deadline, f"job {job_id} did not finish: {job}"
        await asyncio.sleep(0.05)


def test_a_silent_workers_job_runs_elsewhere_and_completes_once(redis_url: str, output_dir: Path) -> None:
    key, _ = RedisKeyAdmin(redis_url).add_key("k", credits=10, rate_per_minute=60)

    async def main() -> None:
        silent = worker(redis_url, output_dir, "silent", heartbeat_seconds=600, lease=0.5)
        healthy = worker(redis_url, output_dir, "healthy", heartbeat_seconds=0.1, lease=0.5)
        observer = RedisStore(redis_url)
        job, _ = await observer.submit(slow_job(2.0, key.id))
        silent.start()
        deadline = time.monotonic() + 10
        while (await observer.get(job.id)).status != JobStatus.PROCESSING:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        healthy.start()
        done = await finished(observer, job.id, 30)
        assert done.status == JobStatus.COMPLETED and done.attempts == 2
        assert done.started_at is not None and done.finished_at is not None
        # the result is the healthy worker's whole run (from its take-over), not the silent one's, which
        # ended about a second after the take-over and was refused
        assert done.finished_at - done.started_at >= 2.0
        await asyncio.sleep(0.5)  # the silent worker's run ends too; its result must not count
        deadline = time.monotonic() + 10
        while silent.running:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        again = await observer.get(job.id)
        assert again is not None and again.finished_at == done.finished_at and again.attempts == 2
        charged = await observer.key(key.id)
        assert charged is not None and (charged.balance, charged.reserved) == (8, 0)  # once
        for running in (silent, healthy):
            await running.stop()
            await running.store.close()
        await observer.close()

    asyncio.run(main())


def test_heartbeats_keep_a_long_job_on_its_worker(redis_url: str, output_dir: Path) -> None:
    key, _ = RedisKeyAdmin(redis_url).add_key("k", credits=10, rate_per_minute=60)

    async def main() -> None:
        first = worker(redis_url, output_dir, "first", heartbeat_seconds=0.1, lease=0.5)
        second = worker(redis_url, output_dir, "second", heartbeat_seconds=0.1, lease=0.5)
        observer = RedisStore(redis_url)
        job, _ = await observer.submit(slow_job(2.0, key.id))
        first.start()
        second.start()
        done = await finished(observer, job.id, 30)
        assert done.status == JobStatus.COMPLETED and done.attempts == 1  # four leases long, never lost
        for running in (first, second):
            await running.stop()
            await running.store.close()
        await observer.close()

    asyncio.run(main())
