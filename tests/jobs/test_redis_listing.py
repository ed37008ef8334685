"""What the Redis store's listing indexes buy and keep up, on a real redis-server: a key's unfinished
jobs, and one API's finished jobs, are listed by reading those jobs alone (counted by Redis itself, in
INFO commandstats), a job hash
Redis dropped at its TTL leaves no id behind in any index, a store written before the indexes gets
them, and the order of creation is the order of arrival whatever the API processes' clocks say."""

from __future__ import annotations

import asyncio
import time

import pytest

from engine.jobs import redis_store
from engine.jobs.redis_keys import RedisKeyAdmin
from engine.jobs.redis_store import RedisStore
from engine.jobs.store import JobQuery
from engine.jobs.types import JobStatus
from tests.jobs.test_store_contract import FINISHED, UNFINISHED, new_job

PENDING = frozenset({JobStatus.QUEUED})
RUNNING = frozenset({JobStatus.PROCESSING})


async def hgetall_calls(store: RedisStore) -> int:
    """How many HGETALLs the Redis server has run (from clients and from scripts alike)."""
    stats = await store.redis.info("commandstats")
    return int(stats.get("cmdstat_hgetall", {}).get("calls", 0))


def test_a_keys_unfinished_jobs_are_listed_without_reading_anyone_elses(redis_url: str) -> None:
    """2,000 finished jobs of one key, 3 unfinished of another: ComfyUI's /queue for the second key
    (its pending and its running prompts) reads those 3 jobs, not the 2,003."""
    admin = RedisKeyAdmin(redis_url)
    busy, _ = admin.add_key("busy", credits=0, rate_per_minute=60)
    quiet, _ = admin.add_key("quiet", credits=0, rate_per_minute=60)
    admin.close()

    async def main() -> None:
        store = RedisStore(redis_url)
        for _ in range(20):
            batch = [new_job(cost=0, key_id=busy.id, api="comfy") for _ in range(100)]
            await asyncio.gather(*(store.submit(job) for job in batch))
            await asyncio.gather(*(store.claim() for _ in batch))
            await asyncio.gather(*(store.complete(job.id, [], {}) for job in batch))
        mine = [(await store.submit(new_job(cost=0, key_id=quiet.id, api="comfy")))[0] for _ in range(3)]
        running = await store.claim()
        assert running is not None and running.id == mine[0].id
        visible = {"api": "comfy", "owner": quiet.id, "dequeued": False, "order": "queue"}
        await store.list_jobs(JobQuery(limit=0))  # the one-time index check, outside the count

        before = await hgetall_calls(store)
        pending, _ = await store.list_jobs(JobQuery(statuses=PENDING, **visible))  # type: ignore[arg-type]
        processing, _ = await store.list_jobs(JobQuery(statuses=RUNNING, **visible))  # type: ignore[arg-type]
        reads = await hgetall_calls(store) - before
        assert [job.id for job in pending] == [mine[1].id, mine[2].id]
        assert [job.id for job in processing] == [mine[0].id]
        assert reads == 6  # each listing read the key's 3 unfinished jobs

        before = await hgetall_calls(store)
        page, total = await store.list_jobs(JobQuery(owner=busy.id, descending=True, limit=10))
        assert total == 2000 and len(page) == 10 and all(job.status == JobStatus.COMPLETED for job in page)
        assert await hgetall_calls(store) - before == 10  # the page, cut before any job was read
        before = await hgetall_calls(store)
        _, total = await store.list_jobs(JobQuery(owner=quiet.id, statuses=FINISHED))
        assert total == 0 and await hgetall_calls(store) - before == 0
        await store.close()

    asyncio.run(main())


def test_comfyuis_history_reads_only_comfyuis_jobs(redis_url: str) -> None:
    """1,000 finished Segmind jobs and 5 finished ComfyUI jobs of one key: ComfyUI's /history (finished,
    latest first) and /api/jobs (every status, by creation) read the 5 ComfyUI jobs, with open access
    (no owner) and for the key; a page by creation that shows dequeued jobs too is cut from the indexes
    and reads only its jobs."""
    key, _ = RedisKeyAdmin(redis_url).add_key("k", credits=0, rate_per_minute=60)

    async def main() -> None:
        store = RedisStore(redis_url)
        comfy = []
        for round_ in range(10):
            batch = [new_job(cost=0, key_id=key.id) for _ in range(100)]
            if round_ % 2 == 0:
                batch.append(new_job(cost=0, key_id=key.id, api="comfy"))
                comfy.append(batch[-1].id)
            await asyncio.gather(*(store.submit(job) for job in batch))
            claimed = await asyncio.gather(*(store.claim() for _ in batch))
            await asyncio.gather(*(store.complete(job.id, [], {}) for job in claimed if job is not None))
        await store.list_jobs(JobQuery(limit=0))  # the one-time index check, outside the count

        latest = [comfy[4], comfy[3]]
        for owner in (None, key.id):
            history = JobQuery(
                api="comfy",
                owner=owner,
                statuses=FINISHED,
                dequeued=False,
                order="finished",
                descending=True,
                limit=2,
            )
            before = await hgetall_calls(store)
            page, total = await store.list_jobs(history)
            assert await hgetall_calls(store) - before == 5
            assert [job.id for job in page] == latest and total == 5
            jobs = JobQuery(api="comfy", owner=owner, dequeued=False, descending=True, limit=2)
            before = await hgetall_calls(store)
            page, total = await store.list_jobs(jobs)
            assert await hgetall_calls(store) - before == 5
            assert [job.id for job in page] == latest and total == 5
            before = await hgetall_calls(store)
            page, total = await store.list_jobs(JobQuery(api="comfy", owner=owner, descending=True, limit=2))
            assert await hgetall_calls(store) - before == 2  # the page, cut before any job was read
            assert [job.id for job in page] == latest and total == 5
        await store.close()

    asyncio.run(main())


async def wait_gone(store: RedisStore, key: str) -> None:
    """Wait until Redis has dropped the key at the end of its TTL."""
    deadline = time.monotonic() + 5
    while await store.redis.exists(key):
        assert time.monotonic() < deadline, f"{key} never expired"
        await asyncio.sleep(0.01)


async def indexed_anywhere(store: RedisStore, job_id: str, key_id: str) -> list[str]:
    """The listing indexes that still hold the job id (every API's included)."""
    apis = sorted(await store.redis.smembers("engine:apis"))
    held = [
        name
        for name in ("jobs", "finished", "unfinished", f"owned:{key_id}", *(f"api:{api}" for api in apis))
        if await store.redis.zscore(f"engine:{name}", job_id) is not None
    ]
    if await store.redis.hexists("engine:jobowner", job_id):
        held.append("jobowner")
    return held


def test_a_job_dropped_at_its_ttl_leaves_no_id_in_any_index(redis_url: str) -> None:
    """Redis drops a finished job's hash at its TTL even if no process swept it: listings skip it (the
    page is cut again without it) and the sweep clears every index of it, the key's and the API's
    included."""
    key, _ = RedisKeyAdmin(redis_url).add_key("k", credits=0, rate_per_minute=60)

    async def main() -> None:
        store = RedisStore(redis_url)
        jobs = [(await store.submit(new_job(cost=0, key_id=key.id)))[0] for _ in range(4)]
        for job in jobs[:3]:
            await store.claim()
            await store.complete(job.id, [], {})
        first, second = jobs[0].id, jobs[1].id
        await store.redis.pexpire(f"engine:job:{first}", 1)
        await wait_gone(store, f"engine:job:{first}")
        page, total = await store.list_jobs(JobQuery(api="segmind", owner=key.id, limit=2))
        assert [job.id for job in page] == [jobs[1].id, jobs[2].id] and total == 3
        assert await indexed_anywhere(store, first, key.id) == []  # dropped by the listing itself

        await store.redis.pexpire(f"engine:job:{second}", 1)
        await wait_gone(store, f"engine:job:{second}")
        page, total = await store.list_jobs(JobQuery(owner=key.id, limit=2))
        assert [job.id for job in page] == [jobs[2].id, jobs[3].id] and total == 2
        assert await indexed_anywhere(store, second, key.id) == []
        page, total = await store.list_jobs(JobQuery(owner=key.id, statuses=FINISHED, dequeued=False))
        assert [job.id for job in page] == [jobs[2].id] and total == 1

        done = jobs[2].id
        await store.redis.pexpire(f"engine:job:{done}", 1)
        await wait_gone(store, f"engine:job:{done}")
        assert await indexed_anywhere(store, done, key.id) == [
            "jobs",
            "finished",
            f"owned:{key.id}",
            "api:segmind",
            "jobowner",
        ]
        assert await store.expire(finished_before=time.time() + 1) == []  # nothing left to return...
        assert await indexed_anywhere(store, done, key.id) == []  # ...but its ids are gone
        assert await listed_ids(store, JobQuery(owner=key.id)) == [jobs[3].id]
        await store.close()

    asyncio.run(main())


async def listed_ids(store: RedisStore, query: JobQuery) -> list[str]:
    return [job.id for job in (await store.list_jobs(query))[0]]


@pytest.mark.parametrize("written", ["before any index", "before the API indexes"])
def test_a_store_written_before_the_indexes_gets_them(redis_url: str, written: str) -> None:
    """A store written before the listing indexes (no marker), or before the API ones (marker "1", every
    other index there), has the missing ones built by the first listing of a store of this version."""
    key, _ = RedisKeyAdmin(redis_url).add_key("k", credits=0, rate_per_minute=60)

    async def main() -> None:
        old = RedisStore(redis_url)
        jobs = [
            (await old.submit(new_job(cost=0, key_id=key.id, api=api)))[0]
            for api in ("comfy", "segmind", "comfy")
        ]
        await old.claim()
        await old.complete(jobs[0].id, [], {})
        await old.close()
        probe = RedisStore(redis_url)
        await probe.redis.delete("engine:api:comfy", "engine:api:segmind", "engine:apis")
        if written == "before any index":
            await probe.redis.delete(
                "engine:unfinished", f"engine:owned:{key.id}", "engine:jobowner", "engine:indexes"
            )
        else:
            await probe.redis.set("engine:indexes", "1")

        store = RedisStore(redis_url)
        assert await listed_ids(store, JobQuery(owner=key.id)) == [job.id for job in jobs]
        assert await listed_ids(store, JobQuery(statuses=UNFINISHED)) == [jobs[1].id, jobs[2].id]
        assert await listed_ids(store, JobQuery(api="comfy")) == [jobs[0].id, jobs[2].id]
        assert await listed_ids(store, JobQuery(api="comfy", owner=key.id, statuses=UNFINISHED)) == [
            jobs[2].id
        ]
        assert await listed_ids(store, JobQuery(api="segmind", owner=key.id)) == [jobs[1].id]
        assert await store.redis.smembers("engine:apis") == {"comfy", "segmind"}
        assert await store.forget(JobQuery(api="comfy", owner=key.id)) == 1
        assert await indexed_anywhere(store, jobs[0].id, key.id) == []
        await probe.close()
        await store.close()

    asyncio.run(main())


def test_created_order_is_arrival_order_when_a_clock_lags(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job submitted through an API process whose clock is a second behind is not created before the
    job that arrived before it: listings by creation agree whether they are cut from the index or
    sorted after reading the jobs (a filter on the API forces the second)."""

    async def main() -> None:
        store = RedisStore(redis_url)
        first, _ = await store.submit(new_job())
        now = time.time()
        monkeypatch.setattr(redis_store.time, "time", lambda: now - 1.0)
        second, _ = await store.submit(new_job())
        monkeypatch.undo()
        assert second.created_at == first.created_at
        expected = [second.id, first.id]
        assert await listed_ids(store, JobQuery(descending=True)) == expected
        assert await listed_ids(store, JobQuery(api="segmind", descending=True)) == expected
        await store.close()

    asyncio.run(main())
