"""The JobStore contract, held by both stores: the embedded SQLite one and a fleet's Redis one (on a real
redis-server). Every protocol method is exercised here against closed-form answers (counts, balances,
orders written out by hand), so the two stores cannot drift apart; the leases and take-over that only
a fleet has follow at the end, on Redis alone."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.jobs.redis_keys import RedisKeyAdmin
from engine.jobs.redis_store import RedisStore
from engine.jobs.sqlite_async import AsyncSqliteStore
from engine.jobs.sqlite_store import MAX_ATTEMPTS, SqliteStore
from engine.jobs.store import JobIdTaken, JobQuery, JobStore, KeyAdmin
from engine.jobs.types import InsufficientCredits, JobStatus, NewJob, OutputFile, RunReport
from tests.redis_server import RedisServer

OUTPUT = OutputFile("a.webp", "api", "image/webp", 64, 64, 100)


@dataclass
class Stores:
    """How a test opens the store under test (on its own event loop) and manages keys in it."""

    open: Callable[..., JobStore]
    keys: KeyAdmin
    kind: str


@pytest.fixture(params=["sqlite", "redis"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    if request.param == "sqlite":
        database = SqliteStore(tmp_path / "jobs.sqlite3")
        yield Stores(lambda **_: AsyncSqliteStore(database), database, "sqlite")
        database.close()
        return
    url = request.getfixturevalue("redis_url")
    admin = RedisKeyAdmin(url)
    yield Stores(lambda **options: RedisStore(url, **options), admin, "redis")
    admin.close()


def run(stores: Stores, body: Callable[[JobStore], Awaitable[None]], **options: object) -> None:
    """Run a test's body on a fresh event loop with the store opened on it."""

    async def main() -> None:
        store = stores.open(**options)
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def new_job(
    cost: float = 1.0,
    key_id: str | None = None,
    idempotency_key: str | None = None,
    api: str = "segmind",
    endpoint: str = "solid-color",
    **comfy: object,
) -> NewJob:
    return NewJob(
        id=str(uuid.uuid4()),
        endpoint=endpoint,
        api=api,
        params={"seed": 1},
        prompt={"1": {"class_type": "X", "inputs": {}}},
        output_node="1",
        cost=cost,
        key_id=key_id,
        idempotency_key=idempotency_key,
        base_url="http://127.0.0.1:1",
        **comfy,  # type: ignore[arg-type]
    )


def test_jobs_run_in_queue_order_with_positions(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        plain = (await store.submit(new_job()))[0]
        front = (await store.submit(new_job(front=True)))[0]
        later_front = (await store.submit(new_job(front=True)))[0]
        numbered = (await store.submit(new_job(number=plain.seq + 0.5)))[0]
        last = (await store.submit(new_job()))[0]
        assert front.number == -front.seq and numbered.number == plain.seq + 0.5 and last.number == last.seq
        expected = [later_front, front, plain, numbered, last]
        assert [await store.queue_position(job) for job in expected] == [0, 1, 2, 3, 4]
        assert await store.queue_depth() == 5
        listed = (await store.list_jobs(JobQuery(order="queue")))[0]
        assert [job.id for job in listed] == [job.id for job in expected]
        claimed = [await store.claim() for _ in expected]
        assert [job.id if job else None for job in claimed] == [job.id for job in expected]
        assert all(job is not None and job.status == JobStatus.PROCESSING for job in claimed)
        assert await store.queue_position(claimed[0]) is None  # type: ignore[arg-type]
        assert await store.claim() is None and await store.queue_depth() == 0

    run(stores, body)


def test_claim_takes_only_its_endpoints_and_its_loaded_ones_first(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        a1 = (await store.submit(new_job(endpoint="a")))[0]
        b1 = (await store.submit(new_job(endpoint="b")))[0]
        c1 = (await store.submit(new_job(endpoint="c")))[0]
        a2 = (await store.submit(new_job(endpoint="a")))[0]
        only_c = await store.claim(worker="w", endpoints=frozenset({"c"}))
        assert only_c is not None and only_c.id == c1.id
        assert await store.claim(worker="w", endpoints=frozenset({"c"})) is None
        loaded_b = await store.claim(worker="w", preferred=frozenset({"b"}))
        assert loaded_b is not None and loaded_b.id == b1.id  # before a1, which arrived first
        rest = [await store.claim(worker="w", endpoints=frozenset({"a", "b"})) for _ in range(2)]
        assert [job.id for job in rest if job] == [a1.id, a2.id]

    run(stores, body)


def test_queue_depths_count_the_waiting_jobs_of_each_endpoint(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        assert await store.queue_depths() == {}
        for endpoint in ("a", "a", "a", "b", "c"):
            await store.submit(new_job(endpoint=endpoint))
        assert await store.queue_depths() == {"a": 3, "b": 1, "c": 1}
        await store.claim(worker="w", endpoints=frozenset({"b"}))  # running is not waiting
        await store.claim(worker="w", endpoints=frozenset({"a"}))
        assert await store.queue_depths() == {"a": 2, "c": 1}  # an emptied queue is left out
        assert sum((await store.queue_depths()).values()) == await store.queue_depth()

    run(stores, body)


def test_a_client_chosen_id_is_used_once(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        job = new_job()
        await store.submit(job)
        with pytest.raises(JobIdTaken):
            await store.submit(job)
        assert await store.queue_depth() == 1

    run(stores, body)


def test_credits_reserved_on_submit_charged_once_on_success(stores: Stores) -> None:
    key, _ = stores.keys.add_key("k", credits=10, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        job, _ = await store.submit(new_job(cost=2.5, key_id=key.id))
        current = await store.key(key.id)
        assert current is not None and (current.balance, current.available) == (10, 7.5)
        await store.claim()
        done = await store.complete(job.id, [OUTPUT], {"inference_time": 0.1})
        assert done is not None and done.status == JobStatus.COMPLETED and done.outputs == [OUTPUT]
        assert done.metrics == {"inference_time": 0.1}
        assert await store.complete(job.id, [OUTPUT], {}) is None  # never twice
        current = await store.key(key.id)
        assert current is not None and (current.balance, current.reserved) == (7.5, 0)

    run(stores, body)


def test_failure_and_cancellation_release_the_reservation(stores: Stores) -> None:
    key, _ = stores.keys.add_key("k", credits=10, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        failing, _ = await store.submit(new_job(cost=4, key_id=key.id))
        running, _ = await store.submit(new_job(cost=1, key_id=key.id))
        queued, _ = await store.submit(new_job(cost=1, key_id=key.id))
        report = RunReport({"1": {"images": []}}, {"1": "1"}, [("execution_error", {"prompt_id": "x"})])
        await store.claim()
        failed = await store.fail(failing.id, "boom", {"queue_time": 1.0}, report)
        assert failed is not None and (failed.status, failed.error, failed.report) == (
            JobStatus.FAILED,
            "boom",
            report,
        )
        await store.claim()
        cancelled = await store.cancel(queued.id)
        assert cancelled is not None and cancelled.status == JobStatus.CANCELLED
        marked = await store.cancel(running.id)
        assert marked is not None and marked.status == JobStatus.PROCESSING and marked.cancel_requested
        stopped = await store.mark_cancelled(running.id)
        assert stopped is not None and stopped.status == JobStatus.CANCELLED
        assert await store.cancel("no-such-job") is None
        current = await store.key(key.id)
        assert current is not None and (current.balance, current.reserved) == (10, 0)

    run(stores, body)


def test_short_balance_is_refused_before_anything_is_stored(stores: Stores) -> None:
    key, _ = stores.keys.add_key("k", credits=3, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        await store.submit(new_job(cost=2, key_id=key.id))
        with pytest.raises(InsufficientCredits) as caught:
            await store.submit(new_job(cost=2, key_id=key.id))
        assert (caught.value.needed, caught.value.available) == (2, 1)
        assert await store.queue_depth() == 1

    run(stores, body)


def test_credits_exact_under_500_concurrent_submits(stores: Stores) -> None:
    """500 submits at once against a balance for 120: exactly 120 are accepted and reserved, every other
    one is refused with InsufficientCredits (which every submit route answers 406, engine.api.submit), and
    settling them leaves the balance exact."""
    key, _ = stores.keys.add_key("k", credits=120, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        results = await asyncio.gather(
            *(store.submit(new_job(cost=1, key_id=key.id)) for _ in range(500)), return_exceptions=True
        )
        accepted = [result[0] for result in results if isinstance(result, tuple)]
        refused = [result for result in results if not isinstance(result, tuple)]
        assert len(accepted) == 120 and len(refused) == 380
        assert all(isinstance(error, InsufficientCredits) for error in refused)
        current = await store.key(key.id)
        assert current is not None and (current.balance, current.reserved) == (120, 120)
        for index in range(120):
            job = await store.claim()
            assert job is not None
            if index % 3:
                await store.complete(job.id, [], {})
            else:
                await store.fail(job.id, "boom")
        current = await store.key(key.id)
        assert current is not None and (current.balance, current.reserved) == (40, 0)

    run(stores, body)


def test_fractional_costs_do_not_drift(stores: Stores) -> None:
    key, _ = stores.keys.add_key("k", credits=1, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        for _ in range(10):
            job, _ = await store.submit(new_job(cost=0.1, key_id=key.id))
            await store.claim()
            await store.complete(job.id, [], {})
        current = await store.key(key.id)
        assert current is not None and current.balance == 0

    run(stores, body)


def test_idempotency_key_returns_the_same_job(stores: Stores) -> None:
    key, _ = stores.keys.add_key("k", credits=10, rate_per_minute=60)
    other, _ = stores.keys.add_key("other", credits=10, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        first, created = await store.submit(new_job(cost=1, key_id=key.id, idempotency_key="abc"))
        again, created_again = await store.submit(new_job(cost=1, key_id=key.id, idempotency_key="abc"))
        assert created and not created_again and again.id == first.id
        current = await store.key(key.id)
        assert current is not None and current.reserved == 1
        theirs, created_theirs = await store.submit(new_job(cost=1, key_id=other.id, idempotency_key="abc"))
        assert created_theirs and theirs.id != first.id  # keys are scoped to their API key

    run(stores, body)


def test_v2_idempotency_keys_are_single_use_until_released_or_stale(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        now = time.time()
        assert await store.claim_idempotency_key("alice", "jobs", "k1", now, 60)
        assert not await store.claim_idempotency_key("alice", "jobs", "k1", now + 1, 60)
        assert await store.claim_idempotency_key("bob", "jobs", "k1", now, 60)  # per owner
        assert await store.claim_idempotency_key("alice", "assets", "k1", now, 60)  # per operation
        assert await store.claim_idempotency_key("alice", "jobs", "k1", now + 61, 60)  # stale claim
        await store.release_idempotency_key("alice", "jobs", "k1")
        assert await store.claim_idempotency_key("alice", "jobs", "k1", now + 62, 60)

    run(stores, body)


def test_graceful_stop_requeues_without_spending_an_attempt(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        job, _ = await store.submit(new_job())
        later, _ = await store.submit(new_job())
        await store.claim(worker="w")
        await store.requeue(job.id, worker="w")
        requeued = await store.get(job.id)
        assert requeued is not None and (requeued.status, requeued.attempts) == (JobStatus.QUEUED, 0)
        assert await store.queue_position(requeued) == 0
        again = await store.claim(worker="w")
        assert again is not None and (again.id, again.attempts) == (job.id, 1)
        assert (await store.get(later.id)) is not None

    run(stores, body)


def test_dequeue_cancels_only_a_queued_job(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        running, _ = await store.submit(new_job())
        queued, _ = await store.submit(new_job())
        await store.claim()
        assert await store.dequeue(running.id) is None
        gone = await store.dequeue(queued.id)
        assert gone is not None and gone.status == JobStatus.CANCELLED and gone.started_at is None
        assert await store.dequeue(queued.id) is None
        assert await store.queue_depth() == 0
        assert await store.statuses([running.id, queued.id, "nope"]) == {
            running.id: JobStatus.PROCESSING,
            queued.id: JobStatus.CANCELLED,
        }

    run(stores, body)


def test_listing_filters_orders_pages_and_counts(stores: Stores) -> None:
    key, _ = stores.keys.add_key("k", credits=0, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        workflow = {"extra_pnginfo": {"workflow": {"id": "wf-1"}}}
        comfy = [
            (await store.submit(new_job(cost=0, key_id=key.id, api="comfy", extra_data=workflow)))[0]
            for _ in range(4)
        ]
        await store.submit(new_job(cost=0, key_id=key.id))  # another API's job
        await store.submit(new_job(cost=0, api="comfy"))  # another key's
        await store.claim()
        await store.complete(comfy[0].id, [], {})
        await store.cancel(comfy[1].id)  # cancelled before it ran: ComfyUI forgets such a prompt
        mine = JobQuery(api="comfy", owner=key.id)
        page, total = await store.list_jobs(
            JobQuery(api="comfy", owner=key.id, descending=True, offset=1, limit=2)
        )
        assert total == 4 and [job.id for job in page] == [comfy[2].id, comfy[1].id]
        shown, total = await store.list_jobs(JobQuery(api="comfy", owner=key.id, dequeued=False))
        assert total == 3 and comfy[1].id not in {job.id for job in shown}
        queued = JobQuery(api="comfy", owner=key.id, statuses=frozenset({JobStatus.QUEUED}))
        assert [job.id for job in (await store.list_jobs(queued))[0]] == [comfy[2].id, comfy[3].id]
        picked = JobQuery(api="comfy", owner=key.id, ids=frozenset({comfy[3].id, "nope"}))
        assert [job.id for job in (await store.list_jobs(picked))[0]] == [comfy[3].id]
        assert (await store.list_jobs(JobQuery(workflow_id="wf-1")))[1] == 4
        assert (await store.list_jobs(JobQuery(workflow_id="wf-2")))[1] == 0
        by_finish = [job.id for job in (await store.list_jobs(JobQuery(api="comfy", order="finished")))[0]]
        assert by_finish[:2] == [comfy[0].id, comfy[1].id]  # finished first (in finishing order)
        assert (await store.list_jobs(mine))[1] == 4

    run(stores, body)


UNFINISHED = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})
FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


async def listed(store: JobStore, **query: object) -> tuple[list[str], int]:
    """The ids of a listing's page, and its total."""
    page, total = await store.list_jobs(JobQuery(**query))  # type: ignore[arg-type]
    return [job.id for job in page], total


async def two_keys_jobs(store: JobStore, a: str, b: str) -> dict[str, str]:
    """Eight jobs of keys a and b and of no key, submitted as a0 b0 a1 n0 a2 a3 b1 a4 and left as: a0 and
    b0 completed, a1 running, n0 failed, a2 cancelled before it ran, a3 b1 a4 queued. Their ids by name."""
    ids = {}
    for name in ("a0", "b0", "a1", "n0", "a2", "a3", "b1", "a4"):
        key_id = {"a": a, "b": b, "n": None}[name[0]]
        ids[name] = (await store.submit(new_job(cost=0, key_id=key_id)))[0].id
    for name in ("a0", "b0", "a1", "n0"):
        claimed = await store.claim()
        assert claimed is not None and claimed.id == ids[name]
    await store.complete(ids["a0"], [], {})
    await store.complete(ids["b0"], [], {})
    await store.fail(ids["n0"], "boom")
    await store.cancel(ids["a2"])
    return ids


def test_listing_a_keys_jobs_and_the_unfinished_ones_pages_in_both_orders(stores: Stores) -> None:
    a, _ = stores.keys.add_key("a", credits=0, rate_per_minute=60)
    b, _ = stores.keys.add_key("b", credits=0, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        ids = await two_keys_jobs(store, a.id, b.id)

        def named(*names: str) -> list[str]:
            return [ids[name] for name in names]

        assert await listed(store, owner=a.id) == (named("a0", "a1", "a2", "a3", "a4"), 5)
        assert await listed(store, owner=a.id, offset=1, limit=3) == (named("a1", "a2", "a3"), 5)
        assert await listed(store, owner=a.id, descending=True, offset=1, limit=2) == (named("a3", "a2"), 5)
        assert await listed(store, owner=a.id, offset=4, limit=5) == (named("a4"), 5)
        assert await listed(store, owner=a.id, offset=9, limit=5) == ([], 5)
        assert await listed(store, owner=a.id, limit=0) == ([], 5)
        assert await listed(store, owner=a.id, statuses=UNFINISHED) == (named("a1", "a3", "a4"), 3)
        assert await listed(store, owner=a.id, statuses=UNFINISHED, descending=True, offset=1, limit=1) == (
            named("a3"),
            3,
        )
        assert await listed(store, owner=a.id, statuses=frozenset({JobStatus.QUEUED})) == (
            named("a3", "a4"),
            2,
        )
        assert await listed(store, owner=a.id, statuses=UNFINISHED, order="queue", descending=True) == (
            named("a4", "a3", "a1"),
            3,
        )
        assert await listed(store, owner=a.id, statuses=FINISHED) == (named("a0", "a2"), 2)
        assert await listed(store, owner=a.id, statuses=FINISHED, dequeued=False) == (named("a0"), 1)
        assert await listed(store, owner=b.id, statuses=UNFINISHED) == (named("b1"), 1)
        assert await listed(store, statuses=UNFINISHED) == (named("a1", "a3", "b1", "a4"), 4)
        assert await listed(store, statuses=UNFINISHED, descending=True, limit=2) == (named("a4", "b1"), 4)
        assert await listed(store, statuses=FINISHED, order="finished") == (named("a0", "b0", "n0", "a2"), 4)
        assert await listed(store, statuses=FINISHED, offset=1, limit=2) == (named("b0", "n0"), 4)
        assert await listed(store, offset=2, limit=3) == (named("a1", "n0", "a2"), 8)
        assert await listed(store, descending=True, offset=2, limit=3) == (named("a3", "a2", "n0"), 8)
        assert await listed(store, owner=a.id, ids=frozenset(named("a1", "b1"))) == (named("a1"), 1)
        assert await listed(store, owner="key_nobody") == ([], 0)

    run(stores, body)


def test_listing_one_apis_jobs_of_every_key_or_of_one_pages_in_both_orders(stores: Stores) -> None:
    """ComfyUI's routes list only ComfyUI's jobs, of one key or (open access) of every key, with the jobs of
    the other APIs in between: c0 s0 c1 c2 s1 c3 s2 c4 (c: comfy, s: segmind), of keys a a b - b a a a,
    left as c0 s0 completed, c1 failed, c2 cancelled before it ran, s1 c3 running, s2 c4 queued."""
    a, _ = stores.keys.add_key("a", credits=0, rate_per_minute=60)
    b, _ = stores.keys.add_key("b", credits=0, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        ids = {}
        owners = {"a": a.id, "b": b.id, "-": None}
        for name, owner in zip(("c0", "s0", "c1", "c2", "s1", "c3", "s2", "c4"), "aab-baaa", strict=True):
            key_id = owners[owner]
            api = "comfy" if name[0] == "c" else "segmind"
            ids[name] = (await store.submit(new_job(cost=0, key_id=key_id, api=api)))[0].id
        await store.cancel(ids["c2"])
        for name in ("c0", "s0", "c1", "s1", "c3"):
            claimed = await store.claim()
            assert claimed is not None and claimed.id == ids[name]
        await store.complete(ids["c0"], [], {})
        await store.complete(ids["s0"], [], {})
        await store.fail(ids["c1"], "boom")

        def named(*names: str) -> list[str]:
            return [ids[name] for name in names]

        comfy = {"api": "comfy"}
        assert await listed(store, **comfy) == (named("c0", "c1", "c2", "c3", "c4"), 5)
        assert await listed(store, **comfy, descending=True, offset=1, limit=2) == (named("c3", "c2"), 5)
        assert await listed(store, **comfy, offset=3, limit=5) == (named("c3", "c4"), 5)
        assert await listed(store, **comfy, dequeued=False) == (named("c0", "c1", "c3", "c4"), 4)
        assert await listed(store, **comfy, owner=a.id) == (named("c0", "c3", "c4"), 3)
        assert await listed(store, **comfy, owner=a.id, descending=True, limit=2) == (named("c4", "c3"), 3)
        assert await listed(store, **comfy, owner=a.id, offset=1, limit=1) == (named("c3"), 3)
        assert await listed(store, **comfy, owner=b.id) == (named("c1"), 1)
        assert await listed(store, api="segmind", owner=a.id) == (named("s0", "s2"), 2)
        assert await listed(store, api="segmind", owner=a.id, descending=True, offset=1) == (named("s0"), 2)
        assert await listed(store, api="segmind", descending=True) == (named("s2", "s1", "s0"), 3)
        assert await listed(store, **comfy, statuses=FINISHED) == (named("c0", "c1", "c2"), 3)
        assert await listed(store, **comfy, statuses=FINISHED, descending=True, offset=1, limit=1) == (
            named("c1"),
            3,
        )
        history = {**comfy, "statuses": FINISHED, "dequeued": False, "order": "finished", "descending": True}
        assert await listed(store, **history) == (named("c1", "c0"), 2)
        assert await listed(store, **history, limit=1) == (named("c1"), 2)
        assert await listed(store, **history, offset=1, limit=1) == (named("c0"), 2)
        assert await listed(store, **history, owner=a.id) == (named("c0"), 1)
        assert await listed(store, **history, owner=b.id) == (named("c1"), 1)
        assert await listed(store, **comfy, statuses=UNFINISHED) == (named("c3", "c4"), 2)
        assert await listed(store, **comfy, statuses=UNFINISHED, descending=True, limit=1) == (named("c4"), 2)
        assert await listed(store, **comfy, statuses=UNFINISHED, owner=b.id) == ([], 0)
        assert await listed(store, api="segmind", statuses=UNFINISHED, owner=b.id) == (named("s1"), 1)
        assert await listed(store, **comfy, owner=a.id, statuses=frozenset({JobStatus.QUEUED})) == (
            named("c4"),
            1,
        )
        assert await listed(store, api="fal") == ([], 0)

        assert await store.forget(JobQuery(api="comfy", owner=a.id)) == 1  # c0; s0 is another API's
        assert await listed(store, **comfy) == (named("c1", "c2", "c3", "c4"), 4)
        assert await listed(store, api="segmind", statuses=FINISHED) == (named("s0"), 1)

    run(stores, body)


def test_listings_follow_jobs_that_finish_are_cancelled_forgotten_and_expire(stores: Stores) -> None:
    a, _ = stores.keys.add_key("a", credits=0, rate_per_minute=60)
    b, _ = stores.keys.add_key("b", credits=0, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        ids = await two_keys_jobs(store, a.id, b.id)

        def named(*names: str) -> list[str]:
            return [ids[name] for name in names]

        await store.complete(ids["a1"], [], {})
        assert await listed(store, owner=a.id, statuses=UNFINISHED) == (named("a3", "a4"), 2)
        assert await listed(store, owner=a.id, statuses=FINISHED) == (named("a0", "a1", "a2"), 3)
        running = await store.claim()
        assert running is not None and running.id == ids["a3"]
        await store.cancel(ids["a3"])
        assert await listed(store, owner=a.id, statuses=UNFINISHED) == (
            named("a3", "a4"),
            2,
        )  # until it stops
        await store.mark_cancelled(ids["a3"])
        assert await listed(store, owner=a.id, statuses=UNFINISHED) == (named("a4"), 1)
        assert await listed(store, owner=a.id, statuses=FINISHED, dequeued=False) == (
            named("a0", "a1", "a3"),
            3,
        )
        assert await listed(store, statuses=UNFINISHED) == (named("b1", "a4"), 2)

        assert await store.forget(JobQuery(owner=a.id)) == 4  # its finished jobs; a4 is still queued
        assert await listed(store, owner=a.id) == (named("a4"), 1)
        assert await listed(store, owner=a.id, statuses=FINISHED) == ([], 0)
        assert await listed(store) == (named("b0", "n0", "b1", "a4"), 4)
        assert await listed(store, descending=True, offset=1, limit=2) == (named("b1", "n0"), 4)
        assert await listed(store, statuses=FINISHED) == (named("b0", "n0"), 2)

        failed = await store.get(ids["n0"])
        assert failed is not None and failed.finished_at is not None
        expired = await store.expire(finished_before=failed.finished_at + 1)
        assert sorted(job.id for job in expired) == sorted(named("b0", "n0"))
        assert await listed(store) == (named("b1", "a4"), 2)
        assert await listed(store, owner=b.id) == (named("b1"), 1)
        assert await listed(store, statuses=FINISHED) == ([], 0)
        assert await listed(store, statuses=FINISHED, order="finished", descending=True) == ([], 0)
        assert await listed(store, statuses=UNFINISHED, descending=True) == (named("a4", "b1"), 2)

    run(stores, body)


def test_forget_deletes_only_finished_jobs_of_the_query(stores: Stores) -> None:
    key, _ = stores.keys.add_key("k", credits=0, rate_per_minute=60)

    async def body(store: JobStore) -> None:
        done = (await store.submit(new_job(cost=0, key_id=key.id, api="comfy")))[0]
        other_key = (await store.submit(new_job(cost=0, api="comfy")))[0]
        waiting = (await store.submit(new_job(cost=0, key_id=key.id, api="comfy")))[0]
        for job in (done, other_key):
            await store.claim()
            await store.add_log(job.id, "ran")
            await store.complete(job.id, [], {})
        assert await store.forget(JobQuery(api="comfy", owner=key.id)) == 1
        assert await store.get(done.id) is None and await store.logs(done.id) == []
        assert await store.get(other_key.id) is not None and await store.get(waiting.id) is not None
        assert (await store.list_jobs(JobQuery()))[1] == 2

    run(stores, body)


def test_expiry_deletes_old_finished_jobs_only(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        done, _ = await store.submit(new_job())
        waiting, _ = await store.submit(new_job())
        await store.claim()
        await store.add_log(done.id, "hello")
        await store.complete(done.id, [OUTPUT], {})
        assert await store.expire(finished_before=0) == []
        finished = await store.get(done.id)
        assert finished is not None and finished.finished_at is not None
        expired = await store.expire(finished_before=finished.finished_at + 1)
        assert [job.id for job in expired] == [done.id] and expired[0].outputs == [OUTPUT]
        assert await store.get(done.id) is None and await store.logs(done.id) == []
        assert await store.get(waiting.id) is not None

    run(stores, body)


def test_logs_and_progress(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        job, _ = await store.submit(new_job())
        await store.claim()
        for message in ("started", "running X (node 1)"):
            await store.add_log(job.id, message)
        await store.set_progress(job.id, 3, 20)
        assert [line.message for line in await store.logs(job.id)] == ["started", "running X (node 1)"]
        current = await store.get(job.id)
        assert current is not None and current.progress == (3, 20)
        assert await store.heartbeat(job.id, "local")

    run(stores, body)


def test_webhook_outbox_leases_retries_and_logs_deliveries(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        job, _ = await store.submit(new_job(webhook_url="https://example.com/hook"))
        assert await store.next_webhook_at() is None
        await store.claim()
        await store.complete(job.id, [], {})
        due_at = await store.next_webhook_at()
        assert due_at is not None and due_at <= time.time()
        now = time.time() + 1
        first = await store.claim_webhook(now, lease_seconds=30)
        assert first is not None and (first.job_id, first.url, first.attempt) == (
            job.id,
            "https://example.com/hook",
            1,
        )
        assert await store.claim_webhook(now, lease_seconds=30) is None  # leased
        await store.webhook_attempted(first, 500, None, retry_at=now + 5)
        assert await store.next_webhook_at() == pytest.approx(now + 5)
        second = await store.claim_webhook(now + 6, lease_seconds=30)
        assert second is not None and second.attempt == 2
        await store.webhook_attempted(second, 204, None, retry_at=None)
        assert await store.next_webhook_at() is None
        deliveries = await store.deliveries(job.id)
        assert [(d.attempt, d.status_code, d.url) for d in deliveries] == [
            (1, 500, "https://example.com/hook"),
            (2, 204, "https://example.com/hook"),
        ]

    run(stores, body)


def test_keys_authenticate_by_secret_and_revoke(stores: Stores) -> None:
    key, secret = stores.keys.add_key("k", credits=1, rate_per_minute=5, admin=True)

    async def body(store: JobStore) -> None:
        assert await store.has_keys()
        found = await store.authenticate(secret)
        assert found is not None and found.id == key.id and found.admin
        assert await store.authenticate(secret + "x") is None
        assert stores.keys.add_credits(key.id, 2.5) is not None
        current = await store.key(key.id)
        assert current is not None and current.balance == 3.5
        assert stores.keys.revoke_key(key.id) and not stores.keys.revoke_key(key.id)
        assert await store.authenticate(secret) is None and not await store.has_keys()
        assert [listed.id for listed in stores.keys.list_keys()] == [key.id]
        assert stores.keys.add_credits("key_nope", 1) is None

    run(stores, body)


def test_rate_limit_bursts_a_minute_then_refills(stores: Stores) -> None:
    async def body(store: JobStore) -> None:
        assert [await store.rate_limit("k", 3) for _ in range(3)] == [0, 0, 0]
        wait = await store.rate_limit("k", 3)
        assert 19 < wait <= 20  # 3 per minute: one every 20 s
        assert await store.rate_limit("other", 3) == 0  # buckets are per key
        assert await store.rate_limit("k", 0) == 0  # 0: unlimited

    run(stores, body)


# -- a fleet: leases, take-over, exactly-once results (Redis) -----------------------------------------


def test_a_silent_workers_job_is_taken_over_and_completed_once(redis_url: str) -> None:
    """Worker A claims a job and stops sending heartbeats; after the lease, worker B takes it (the
    attempt counted), B's completion charges once, and A's late completion is refused."""
    admin = RedisKeyAdmin(redis_url)
    key, _ = admin.add_key("k", credits=5, rate_per_minute=60)

    async def main() -> None:
        store = RedisStore(redis_url, lease_seconds=0.3)
        job, _ = await store.submit(new_job(cost=2, key_id=key.id))
        first = await store.claim(worker="a")
        assert first is not None and first.attempts == 1
        assert await store.claim(worker="b") is None  # A's lease holds
        deadline = time.monotonic() + 5
        while (second := await store.claim(worker="b")) is None:
            assert time.monotonic() < deadline, "the job was never taken over"
            await asyncio.sleep(0.05)
        assert second.id == job.id and second.attempts == 2 and second.status == JobStatus.PROCESSING
        assert not await store.heartbeat(job.id, "a")  # A learns it lost the job
        assert await store.complete(job.id, [OUTPUT], {}, worker="a") is None
        assert await store.fail(job.id, "late", worker="a") is None
        done = await store.complete(job.id, [OUTPUT], {}, worker="b")
        assert done is not None and done.status == JobStatus.COMPLETED
        assert await store.complete(job.id, [OUTPUT], {}, worker="b") is None
        current = await store.key(key.id)
        assert current is not None and (current.balance, current.reserved) == (3, 0)
        assert await store.claim(worker="c") is None  # the finished job's lease is gone too
        await store.close()

    asyncio.run(main())


def test_heartbeats_keep_the_lease(redis_url: str) -> None:
    async def main() -> None:
        store = RedisStore(redis_url, lease_seconds=0.4)
        job, _ = await store.submit(new_job())
        assert await store.claim(worker="a") is not None
        for _ in range(8):  # 0.8 s, twice the lease, with a heartbeat every 0.1 s
            await asyncio.sleep(0.1)
            assert await store.heartbeat(job.id, "a")
            assert await store.claim(worker="b") is None
        await store.close()

    asyncio.run(main())


def test_a_job_whose_workers_keep_dying_is_failed(redis_url: str) -> None:
    async def main() -> None:
        store = RedisStore(redis_url, lease_seconds=0.05)
        job, _ = await store.submit(new_job())
        for attempt in range(MAX_ATTEMPTS):
            deadline = time.monotonic() + 5
            while (claimed := await store.claim(worker=f"w{attempt}")) is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert claimed.attempts == attempt + 1
            await asyncio.sleep(0.1)  # the worker dies: no heartbeat
        assert await store.claim(worker="last") is None
        failed = await store.get(job.id)
        assert failed is not None and failed.status == JobStatus.FAILED
        assert f"stopped {MAX_ATTEMPTS} times" in (failed.error or "")
        await store.close()

    asyncio.run(main())


def test_finished_jobs_expire_from_redis_after_the_retention(redis_url: str) -> None:
    async def main() -> None:
        store = RedisStore(redis_url, retention_seconds=60)
        job, _ = await store.submit(new_job())
        await store.claim()
        await store.add_log(job.id, "hello")
        await store.complete(job.id, [], {})
        ttl = await store.redis.pttl(f"engine:job:{job.id}")
        log_ttl = await store.redis.pttl(f"engine:log:{job.id}")
        assert 60_000 < ttl <= 660_000 and 60_000 < log_ttl <= 660_000
        await store.close()

    asyncio.run(main())


def test_jobs_survive_a_redis_restart_with_the_append_only_file(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", persist=True).start()
    admin = RedisKeyAdmin(server.url)
    key, secret = admin.add_key("k", credits=5, rate_per_minute=60)
    admin.close()

    async def submit() -> str:
        store = RedisStore(server.url)
        job, _ = await store.submit(new_job(cost=2, key_id=key.id))
        await store.close()
        return job.id

    try:
        job_id = asyncio.run(submit())
        server.stop()
        server = RedisServer(tmp_path / "redis", persist=True, port=server.port).start()

        async def check() -> None:
            store = RedisStore(server.url)
            assert (await store.authenticate(secret)) is not None
            claimed = await store.claim()
            assert claimed is not None and claimed.id == job_id
            current = await store.key(key.id)
            assert current is not None and current.reserved == 2
            await store.close()

        asyncio.run(check())
    finally:
        server.stop()


def test_rate_limits_and_credits_are_shared_by_every_process_of_a_fleet(redis_url: str) -> None:
    """Two API processes (two stores, their own connections) draw on one allowance and one balance."""
    key, _ = RedisKeyAdmin(redis_url).add_key("k", credits=3, rate_per_minute=3)

    async def main() -> None:
        first, second = RedisStore(redis_url), RedisStore(redis_url)
        assert [await first.rate_limit(key.id, 3), await second.rate_limit(key.id, 3)] == [0, 0]
        assert await first.rate_limit(key.id, 3) == 0
        assert await second.rate_limit(key.id, 3) > 19  # the fourth in the minute, whichever process
        await first.submit(new_job(cost=2, key_id=key.id))
        with pytest.raises(InsufficientCredits):
            await second.submit(new_job(cost=2, key_id=key.id))
        await first.close()
        await second.close()

    asyncio.run(main())
