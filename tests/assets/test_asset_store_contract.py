"""The AssetStore contract, held by the embedded SQLite records and a fleet's Redis ones (on a real
redis-server): owner scoping, newest-first listing with resumption and tag filter, the blob reference
count a delete reports, a job's records, checked against records and orders written out here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from engine.assets.redis_assets import RedisAssetStore
from engine.assets.store import AssetStore
from engine.assets.types import NewAsset
from engine.jobs.redis_store import RedisStore
from engine.jobs.sqlite_async import AsyncSqliteStore
from engine.jobs.sqlite_store import SqliteStore

ALICE, BOB = "key_alice", "key_bob"
D1, D2 = "1" * 64, "2" * 64


@pytest.fixture(params=["sqlite", "redis"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Runs a test's body on a fresh event loop with the asset store under test."""
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def runner(body: Callable[[AssetStore], Awaitable[None]]) -> None:
        async def main() -> None:
            if redis_url is None:
                sqlite = AsyncSqliteStore(SqliteStore(tmp_path / "engine.sqlite3"))
                try:
                    await body(sqlite)
                finally:
                    await sqlite.close()
                return
            fleet = RedisStore(redis_url)
            try:
                await body(RedisAssetStore(fleet.redis, fleet.prefix, redis_url))
            finally:
                await fleet.close()

        asyncio.run(main())

    yield runner


def upload(owner: str, digest: str, name: str | None = "a.png", tags: tuple[str, ...] = ()) -> NewAsset:
    return NewAsset(owner, digest, 10, "image/png", name, tags)


def test_records_are_scoped_to_their_owner(run: Callable[..., None]) -> None:
    async def body(store: AssetStore) -> None:
        mine = await store.add_asset(upload(ALICE, D1, tags=("input",)))
        assert (mine.owner, mine.digest, mine.file_path, mine.tags, mine.job_id) == (
            ALICE,
            D1,
            "a.png",
            ("input",),
            None,
        )
        assert await store.asset(ALICE, mine.id) == mine
        assert await store.asset(BOB, mine.id) is None
        assert await store.latest_asset_over(BOB, D1) is None
        assert await store.delete_asset(BOB, mine.id) is None

    run(body)


def test_latest_and_same_records_over_a_blob(run: Callable[..., None]) -> None:
    async def body(store: AssetStore) -> None:
        first = await store.add_asset(upload(ALICE, D1, "a.png"))
        second = await store.add_asset(upload(ALICE, D1, "b.png", ("x",)))
        output = await store.add_asset(NewAsset(ALICE, D1, 10, "image/png", "a.png", (), job_id="job-1"))
        latest = await store.latest_asset_over(ALICE, D1)
        assert latest is not None and latest.id == output.id
        same = await store.same_asset(ALICE, D1, "a.png", ())
        assert same is not None and same.id == first.id  # a job's output is never "the same upload"
        same_tagged = await store.same_asset(ALICE, D1, "b.png", ("x",))
        assert same_tagged is not None and same_tagged.id == second.id
        assert await store.same_asset(ALICE, D1, "b.png", ()) is None
        assert [asset.id for asset in await store.job_assets(ALICE, "job-1")] == [output.id]
        assert await store.job_assets(BOB, "job-1") == []

    run(body)


def test_listing_runs_newest_first_resumes_and_filters_by_tag(run: Callable[..., None]) -> None:
    async def body(store: AssetStore) -> None:
        added = [
            await store.add_asset(upload(ALICE, D1, f"{index}.png", ("even",) if index % 2 == 0 else ()))
            for index in range(5)
        ]
        await store.add_asset(upload(BOB, D1))
        newest = [asset.id for asset in reversed(added)]
        first_page = await store.list_assets(ALICE, 2, None, None)
        assert [asset.id for asset in first_page] == newest[:2]
        rest = await store.list_assets(ALICE, 10, first_page[-1].seq, None)
        assert [asset.id for asset in rest] == newest[2:]
        even = await store.list_assets(ALICE, 10, None, "even")
        assert [asset.id for asset in even] == [added[4].id, added[2].id, added[0].id]

    run(body)


def test_delete_reports_whether_the_blob_is_still_named(run: Callable[..., None]) -> None:
    async def body(store: AssetStore) -> None:
        alices = await store.add_asset(upload(ALICE, D1))
        bobs = await store.add_asset(upload(BOB, D1))
        other = await store.add_asset(upload(ALICE, D2))
        assert await store.asset_digests() == {D1, D2}
        deleted = await store.delete_asset(ALICE, alices.id)
        assert deleted is not None and deleted[0].id == alices.id and deleted[1] is True  # Bob's names it
        assert await store.asset(ALICE, alices.id) is None
        deleted = await store.delete_asset(BOB, bobs.id)
        assert deleted is not None and deleted[1] is False
        assert await store.asset_digests() == {D2}
        assert [asset.id for asset in await store.list_assets(ALICE, 10, None, None)] == [other.id]

    run(body)
