"""The AssetStore contract, held by the embedded SQLite records and a fleet's Redis ones (on a real
redis-server): owner scoping, newest-first listing with resumption and tag filter, the blob reference
count a delete reports, a job's records, an upload's expiry, the holds of queued jobs, and the sweeps
of a job's outputs, checked against records, orders and digests written out here. Each store runs
beside the job store it shares its jobs with (the SQLite file, the fleet's Redis), since holds and
outputs follow the jobs' records."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from engine.assets.redis_assets import RedisAssetStore
from engine.assets.store import AssetStore
from engine.assets.types import AssetInUse, NewAsset
from engine.jobs.redis_store import RedisStore
from engine.jobs.sqlite_async import AsyncSqliteStore
from engine.jobs.sqlite_store import SqliteStore
from engine.jobs.store import JobQuery, JobStore
from engine.jobs.types import Job, JobStatus, NewJob

ALICE, BOB = "key_alice", "key_bob"
D1, D2, D3 = "1" * 64, "2" * 64, "3" * 64
NOW = 1_000.0
"""The readers' clock: records expire against the `now` they are given, not the wall clock."""


@pytest.fixture(params=["sqlite", "redis"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Runs a test's body on a fresh event loop with the asset store under test."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def runner(body: Callable[[AssetStore, JobStore], Awaitable[None]]) -> None:
        async def main() -> None:
            if redis_url is None:
                sqlite = AsyncSqliteStore(SqliteStore(tmp_path / "engine.sqlite3"))
                try:
                    await body(sqlite, sqlite)
                finally:
                    await sqlite.close()
                return
            fleet = RedisStore(redis_url)
            try:
                await body(RedisAssetStore(fleet.redis, fleet.prefix, redis_url), fleet)
            finally:
                await fleet.close()

        asyncio.run(main())

    yield runner


def upload(
    owner: str,
    digest: str,
    name: str | None = "a.png",
    tags: tuple[str, ...] = (),
    expires_at: float | None = None,
) -> NewAsset:
    return NewAsset(owner, digest, 10, "image/png", name, tags, expires_at=expires_at)


def output(owner: str, digest: str, job_id: str, name: str) -> NewAsset:
    return NewAsset(owner, digest, 10, "image/png", name, (), job_id, node_id="9", output_type="image")


async def queued_job(jobs: JobStore) -> Job:
    job, created = await jobs.submit(NewJob(str(uuid.uuid4()), "comfy", "comfy", {}, {}, "9", 0.0))
    assert created and job.status == JobStatus.QUEUED
    return job


async def forget_job(jobs: JobStore, job_id: str) -> None:
    """Cancel the job and delete its record, as a client's DELETE of a finished job does."""
    cancelled = await jobs.cancel(job_id)
    assert cancelled is not None and cancelled.status == JobStatus.CANCELLED
    assert await jobs.forget(JobQuery(ids=frozenset({job_id}))) == 1


def test_records_are_scoped_to_their_owner(run: Callable[..., None]) -> None:
    async def body(store: AssetStore, jobs: JobStore) -> None:
        mine = await store.add_asset(upload(ALICE, D1, tags=("input",)))
        assert (mine.owner, mine.digest, mine.file_path, mine.tags, mine.job_id) == (
            ALICE,
            D1,
            "a.png",
            ("input",),
            None,
        )
        assert await store.asset(ALICE, mine.id, NOW) == mine
        assert await store.asset(BOB, mine.id, NOW) is None
        assert await store.latest_asset_over(BOB, D1, NOW) is None
        assert await store.delete_asset(BOB, mine.id, NOW) is None

    run(body)


def test_latest_and_same_records_over_a_blob(run: Callable[..., None]) -> None:
    async def body(store: AssetStore, jobs: JobStore) -> None:
        first = await store.add_asset(upload(ALICE, D1, "a.png"))
        second = await store.add_asset(upload(ALICE, D1, "b.png", ("x",)))
        output = await store.add_asset(NewAsset(ALICE, D1, 10, "image/png", "a.png", (), job_id="job-1"))
        latest = await store.latest_asset_over(ALICE, D1, NOW)
        assert latest is not None and latest.id == output.id
        same = await store.same_asset(ALICE, D1, "a.png", (), NOW)
        assert same is not None and same.id == first.id  # a job's output is never "the same upload"
        same_tagged = await store.same_asset(ALICE, D1, "b.png", ("x",), NOW)
        assert same_tagged is not None and same_tagged.id == second.id
        assert await store.same_asset(ALICE, D1, "b.png", (), NOW) is None
        assert [asset.id for asset in await store.job_assets(ALICE, "job-1")] == [output.id]
        assert await store.job_assets(BOB, "job-1") == []

    run(body)


def test_listing_runs_newest_first_resumes_and_filters_by_tag(run: Callable[..., None]) -> None:
    async def body(store: AssetStore, jobs: JobStore) -> None:
        added = [
            await store.add_asset(upload(ALICE, D1, f"{index}.png", ("even",) if index % 2 == 0 else ()))
            for index in range(5)
        ]
        await store.add_asset(upload(BOB, D1))
        newest = [asset.id for asset in reversed(added)]
        first_page = await store.list_assets(ALICE, 2, None, None, NOW)
        assert [asset.id for asset in first_page] == newest[:2]
        rest = await store.list_assets(ALICE, 10, first_page[-1].seq, None, NOW)
        assert [asset.id for asset in rest] == newest[2:]
        even = await store.list_assets(ALICE, 10, None, "even", NOW)
        assert [asset.id for asset in even] == [added[4].id, added[2].id, added[0].id]

    run(body)


def test_delete_reports_whether_the_blob_is_still_named(run: Callable[..., None]) -> None:
    async def body(store: AssetStore, jobs: JobStore) -> None:
        alices = await store.add_asset(upload(ALICE, D1))
        bobs = await store.add_asset(upload(BOB, D1))
        other = await store.add_asset(upload(ALICE, D2))
        assert await store.asset_digests() == {D1, D2}
        deleted = await store.delete_asset(ALICE, alices.id, NOW)
        assert deleted is not None and deleted[0].id == alices.id and deleted[1] is True  # Bob's names it
        assert await store.asset(ALICE, alices.id, NOW) is None
        deleted = await store.delete_asset(BOB, bobs.id, NOW)
        assert deleted is not None and deleted[1] is False
        assert await store.asset_digests() == {D2}
        assert [asset.id for asset in await store.list_assets(ALICE, 10, None, None, NOW)] == [other.id]

    run(body)


def test_an_expired_upload_is_gone_for_readers_then_swept(run: Callable[..., None]) -> None:
    async def body(store: AssetStore, jobs: JobStore) -> None:
        expiring = await store.add_asset(upload(ALICE, D1, "a.png", expires_at=NOW + 10))
        lasting = await store.add_asset(upload(ALICE, D2, "b.png"))
        bobs = await store.add_asset(upload(BOB, D2, "b.png", expires_at=NOW + 10))
        assert expiring.expires_at == NOW + 10 and lasting.expires_at is None
        before = NOW + 9.5
        assert await store.asset(ALICE, expiring.id, before) == expiring
        assert await store.latest_asset_over(ALICE, D1, before) == expiring
        assert await store.same_asset(ALICE, D1, "a.png", (), before) == expiring
        assert await store.list_assets(ALICE, 10, None, None, before) == [lasting, expiring]
        assert await store.expire_assets(before) == set()

        at = NOW + 10  # an upload lives until, not through, its expires_at
        assert await store.asset(ALICE, expiring.id, at) is None
        assert await store.latest_asset_over(ALICE, D1, at) is None
        assert await store.same_asset(ALICE, D1, "a.png", (), at) is None
        assert await store.list_assets(ALICE, 10, None, None, at) == [lasting]
        assert await store.list_assets(ALICE, 1, lasting.seq + 1, None, at) == [lasting]
        assert await store.delete_asset(ALICE, expiring.id, at) is None
        assert await store.asset_digests() == {D1, D2}  # still recorded until the sweep

        assert await store.expire_assets(at) == {D1}  # D2 is still named by Alice's lasting record
        assert await store.asset_digests() == {D2}
        assert await store.asset(ALICE, expiring.id, before) is None
        assert await store.asset(BOB, bobs.id, before) is None
        assert await store.asset(ALICE, lasting.id, NOW + 1e9) == lasting
        assert await store.expire_assets(NOW + 1e9) == set()

    run(body)


def test_setting_an_expiry_moves_or_lifts_it(run: Callable[..., None]) -> None:
    async def body(store: AssetStore, jobs: JobStore) -> None:
        first = await store.add_asset(upload(ALICE, D1, "a.png", expires_at=NOW + 10))
        second = await store.add_asset(upload(ALICE, D2, "b.png"))
        extended = await store.set_asset_expiry(first.id, NOW + 100)
        assert extended.id == first.id and extended.expires_at == NOW + 100
        assert await store.asset(ALICE, first.id, NOW + 50) == extended
        assert await store.expire_assets(NOW + 50) == set()

        lifted = await store.set_asset_expiry(first.id, None)
        assert lifted.expires_at is None
        assert await store.expire_assets(NOW + 1e9) == set()
        assert await store.asset(ALICE, first.id, NOW + 1e9) == lifted

        limited = await store.set_asset_expiry(second.id, NOW + 5)
        assert limited.expires_at == NOW + 5
        assert await store.asset(ALICE, second.id, NOW + 5) is None
        assert await store.expire_assets(NOW + 5) == {D2}
        assert await store.asset_digests() == {D1}

    run(body)


def test_a_queued_or_running_job_holds_its_assets(run: Callable[..., None]) -> None:
    async def body(store: AssetStore, jobs: JobStore) -> None:
        held = await store.add_asset(upload(ALICE, D1, "a.png"))
        free = await store.add_asset(upload(ALICE, D2, "b.png"))
        first, second = await queued_job(jobs), await queued_job(jobs)
        await store.hold_assets(first.id, [held.id])
        await store.hold_assets(second.id, iter([held.id, free.id]))
        await store.hold_assets(second.id, [held.id])  # holding twice is one hold
        with pytest.raises(AssetInUse):
            await store.delete_asset(ALICE, held.id, NOW)
        assert await store.asset(ALICE, held.id, NOW) == held
        assert await store.delete_asset(BOB, held.id, NOW) is None  # not Bob's: no such record for him

        await forget_job(jobs, second.id)
        assert await store.expire_assets(NOW) == set()
        deleted = await store.delete_asset(ALICE, free.id, NOW)
        assert deleted is not None and deleted[0] == free and deleted[1] is False
        with pytest.raises(AssetInUse):  # the first job still waits
            await store.delete_asset(ALICE, held.id, NOW)

        claimed = await jobs.claim()
        assert claimed is not None and claimed.id == first.id and claimed.status == JobStatus.PROCESSING
        with pytest.raises(AssetInUse):
            await store.delete_asset(ALICE, held.id, NOW)
        await jobs.complete(first.id, [], {})
        deleted = await store.delete_asset(ALICE, held.id, NOW)
        assert deleted is not None and deleted[0] == held and deleted[1] is False
        assert await store.asset_digests() == set()

    run(body)


def test_forgetting_a_job_deletes_its_outputs_of_every_owner(run: Callable[..., None]) -> None:
    async def body(store: AssetStore, jobs: JobStore) -> None:
        uploaded = await store.add_asset(upload(ALICE, D1, "in.png"))
        alices = await store.add_asset(output(ALICE, D1, "job-1", "out_1.png"))
        bobs = await store.add_asset(output(BOB, D2, "job-1", "out_2.png"))
        other = await store.add_asset(output(ALICE, D3, "job-2", "out_3.png"))
        assert (alices.job_id, alices.node_id, alices.output_type) == ("job-1", "9", "image")
        assert await store.job_assets(BOB, "job-1") == [bobs]

        assert await store.forget_job_assets("job-1") == {D2}  # D1 is still named by the upload
        assert await store.job_assets(ALICE, "job-1") == []
        assert await store.job_assets(BOB, "job-1") == []
        assert await store.asset(BOB, bobs.id, NOW) is None
        assert await store.list_assets(ALICE, 10, None, None, NOW) == [other, uploaded]
        assert await store.asset_digests() == {D1, D3}
        assert await store.forget_job_assets("job-1") == set()
        assert await store.job_assets(ALICE, "job-2") == [other]

    run(body)


def test_the_outputs_of_a_job_no_longer_stored_are_swept(run: Callable[..., None]) -> None:
    async def body(store: AssetStore, jobs: JobStore) -> None:
        job = await queued_job(jobs)
        kept = await store.add_asset(output(ALICE, D1, job.id, "out_1.png"))
        orphan = await store.add_asset(output(ALICE, D2, "never-stored", "out_2.png"))
        assert kept.expires_at is None  # an output lives as long as its job, not by a clock
        assert await store.expire_assets(NOW + 1e9) == {D2}
        assert await store.job_assets(ALICE, "never-stored") == []
        assert await store.asset(ALICE, orphan.id, NOW) is None
        assert await store.job_assets(ALICE, job.id) == [kept]

        await forget_job(jobs, job.id)
        assert await store.job_assets(ALICE, job.id) == [kept]  # until the sweep
        assert await store.expire_assets(NOW) == {D1}
        assert await store.job_assets(ALICE, job.id) == []
        assert await store.asset_digests() == set()

    run(body)
