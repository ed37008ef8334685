"""Job updates and cancellations between two processes' broadcasts over a real redis-server.

Two `RedisBroadcast` objects with separate connections stand for two processes (a worker and an API
process): what one publishes must reach the other's listeners as the same `JobUpdate` an in-process
listener gets, executor events included, and each process must hear its own updates exactly once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from engine.graph.events import NodeFinished, NodeProgress, NodesCached, NodeStarted
from engine.jobs.broadcast import JobUpdate
from engine.jobs.redis_broadcast import RedisBroadcast
from engine.jobs.types import JobStatus


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


async def _get(queue: asyncio.Queue[JobUpdate]) -> JobUpdate:
    return await asyncio.wait_for(queue.get(), 5)


def _run(body: Callable[[RedisBroadcast, RedisBroadcast], Awaitable[None]], url: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker, api = RedisBroadcast(loop, url, prefix="t:"), RedisBroadcast(loop, url, prefix="t:")
        await worker.start()
        await api.start()
        try:
            await body(worker, api)
        finally:
            await worker.close()
            await api.close()

    asyncio.run(main())


def test_a_job_update_reaches_a_listener_in_another_process_once(redis_url: str) -> None:
    status = JobUpdate("job-1", "status", {"status": JobStatus.COMPLETED, "error": None})
    progress = JobUpdate("job-1", "progress", {"node": "3", "value": 2, "max": 4})
    last = JobUpdate("job-1", "log", {"message": "last", "timestamp": 5.0})
    elsewhere = JobUpdate("other", "log", {"message": "another job", "timestamp": 6.0})

    async def body(worker: RedisBroadcast, api: RedisBroadcast) -> None:
        with api.listen("job-1") as remote, worker.listen("job-1") as local, api.listen("other") as other:
            for update in (progress, status, last, elsewhere):
                worker.publish(update)
            heard = [await _get(remote) for _ in range(3)]
            assert heard == [progress, status, last]  # an echo or another job's update would come between
            assert heard[1].data["status"] is JobStatus.COMPLETED
            assert [await _get(local) for _ in range(3)] == [progress, status, last]
            assert await _get(other) == elsewhere
            assert local.empty() and remote.empty() and other.empty()

    _run(body, redis_url)


def test_executor_events_reach_a_listener_of_every_job_with_their_preview(redis_url: str) -> None:
    events = [
        JobUpdate("job-2", "event", {"timestamp": 1}, event=NodesCached("job-2", ("1", "2"))),
        JobUpdate("job-2", "event", {"timestamp": 2}, event=NodeStarted("job-2", "5", "5", "KSampler")),
        JobUpdate(
            "job-2",
            "event",
            {"timestamp": 3},
            event=NodeProgress("job-2", "5", 1, 4),
            preview_jpeg=b"\xff\xd8x",
        ),
        JobUpdate(
            "job-2",
            "event",
            {"timestamp": 4},
            event=NodeFinished("job-2", "9", "9", {"images": [{"filename": "a.png", "type": "output"}]}),
        ),
    ]

    async def body(worker: RedisBroadcast, api: RedisBroadcast) -> None:
        worker.publish(events[0])  # nobody follows every job yet: not sent at all
        assert not worker.listening_to_all
        with api.listen_all() as everything:
            await _until(lambda: worker.listening_to_all)  # the worker learns someone listens
            for update in events:
                worker.publish(update)
            assert [await _get(everything) for _ in events] == events
        await _until(lambda: not worker.listening_to_all)

    _run(body, redis_url)


def test_a_cancellation_reaches_the_worker_process(redis_url: str) -> None:
    async def body(worker: RedisBroadcast, api: RedisBroadcast) -> None:
        on_worker: list[str] = []
        on_api: list[str] = []
        worker.on_cancel(on_worker.append)
        api.on_cancel(on_api.append)
        api.request_cancel("job-3")
        api.request_cancel("job-4")
        await _until(lambda: "job-4" in on_worker)
        assert on_worker == ["job-3", "job-4"] and on_api == ["job-3", "job-4"]  # each hears each once

    _run(body, redis_url)
