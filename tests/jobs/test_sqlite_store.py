"""The job store keeps every accepted job and moves credits exactly once, across crashes."""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from engine.jobs.keys import hash_secret
from engine.jobs.sqlite_connection import SchemaTooNew
from engine.jobs.sqlite_store import MAX_ATTEMPTS, SqliteStore
from engine.jobs.types import InsufficientCredits, JobStatus, NewJob, OutputFile


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "jobs.sqlite3")


def new_job(cost: float = 1.0, key_id: str | None = None, idempotency_key: str | None = None) -> NewJob:
    return NewJob(
        id=str(uuid.uuid4()),
        endpoint="solid-color",
        api="segmind",
        params={"seed": 1},
        prompt={"1": {"class_type": "X", "inputs": {}}},
        output_node="1",
        cost=cost,
        key_id=key_id,
        idempotency_key=idempotency_key,
        base_url="http://127.0.0.1:1",
    )


OUTPUT = OutputFile("a.webp", "api", "image/webp", 64, 64, 100)


def test_jobs_run_in_submission_order_with_queue_positions(store: SqliteStore) -> None:
    first, _ = store.submit(new_job())
    second, _ = store.submit(new_job())
    assert (store.queue_position(first), store.queue_position(second), store.queue_depth()) == (0, 1, 2)
    claimed = store.claim()
    assert claimed is not None and claimed.id == first.id and claimed.status == JobStatus.PROCESSING
    assert store.queue_position(store.get(second.id)) == 0
    assert store.queue_position(claimed) is None


def test_credits_reserved_on_submit_charged_on_success(store: SqliteStore) -> None:
    key, _ = store.add_key("k", credits=10, rate_per_minute=60)
    job, _ = store.submit(new_job(cost=2.5, key_id=key.id))
    assert (store.key(key.id).balance, store.key(key.id).available) == (10, 7.5)
    store.claim()
    done = store.complete(job.id, [OUTPUT], {"inference_time": 0.1})
    assert done is not None and done.status == JobStatus.COMPLETED and done.outputs == [OUTPUT]
    assert (store.key(key.id).balance, store.key(key.id).reserved) == (7.5, 0)
    assert store.complete(job.id, [OUTPUT], {}) is None  # never twice
    assert store.key(key.id).balance == 7.5


def test_failure_releases_the_reservation(store: SqliteStore) -> None:
    key, _ = store.add_key("k", credits=10, rate_per_minute=60)
    job, _ = store.submit(new_job(cost=4, key_id=key.id))
    store.claim()
    failed = store.fail(job.id, "boom")
    assert failed is not None and failed.error == "boom"
    assert (store.key(key.id).balance, store.key(key.id).reserved) == (10, 0)


def test_short_balance_is_refused_before_anything_is_stored(store: SqliteStore) -> None:
    key, _ = store.add_key("k", credits=3, rate_per_minute=60)
    store.submit(new_job(cost=2, key_id=key.id))
    with pytest.raises(InsufficientCredits) as caught:
        store.submit(new_job(cost=2, key_id=key.id))
    assert (caught.value.needed, caught.value.available) == (2, 1)
    assert store.queue_depth() == 1


def test_fractional_costs_do_not_drift(store: SqliteStore) -> None:
    key, _ = store.add_key("k", credits=1, rate_per_minute=60)
    for _ in range(10):
        job, _ = store.submit(new_job(cost=0.1, key_id=key.id))
        store.claim()
        store.complete(job.id, [], {})
    assert store.key(key.id).balance == 0


def test_idempotency_key_returns_the_same_job(store: SqliteStore) -> None:
    key, _ = store.add_key("k", credits=10, rate_per_minute=60)
    first, created = store.submit(new_job(cost=1, key_id=key.id, idempotency_key="abc"))
    again, created_again = store.submit(new_job(cost=1, key_id=key.id, idempotency_key="abc"))
    assert created and not created_again and again.id == first.id
    assert store.key(key.id).reserved == 1
    other, _ = store.add_key("other", credits=10, rate_per_minute=60)
    theirs, created_theirs = store.submit(new_job(cost=1, key_id=other.id, idempotency_key="abc"))
    assert created_theirs and theirs.id != first.id  # keys are scoped to their API key


def test_recover_requeues_interrupted_jobs_and_gives_up_after_repeated_crashes(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = SqliteStore(path)
    job, _ = store.submit(new_job())
    for attempt in range(1, MAX_ATTEMPTS + 1):
        store.claim()
        store.close()  # the process dies mid-job
        store = SqliteStore(path)
        requeued, failed = store.recover()
        if attempt < MAX_ATTEMPTS:
            assert (requeued, failed) == (1, 0) and store.get(job.id).status == JobStatus.QUEUED
    assert (requeued, failed) == (0, 1)
    assert store.get(job.id).status == JobStatus.FAILED and "3 times" in store.get(job.id).error


def test_graceful_stop_requeues_without_spending_an_attempt(store: SqliteStore) -> None:
    job, _ = store.submit(new_job())
    store.claim()
    store.requeue(job.id)
    requeued = store.get(job.id)
    assert requeued.status == JobStatus.QUEUED and requeued.attempts == 0


def test_cancel_queued_and_running(store: SqliteStore) -> None:
    key, _ = store.add_key("k", credits=10, rate_per_minute=60)
    running, _ = store.submit(new_job(cost=1, key_id=key.id))
    queued, _ = store.submit(new_job(cost=1, key_id=key.id))
    store.claim()
    assert store.cancel(queued.id).status == JobStatus.CANCELLED
    marked = store.cancel(running.id)
    assert marked.status == JobStatus.PROCESSING and marked.cancel_requested
    assert store.mark_cancelled(running.id).status == JobStatus.CANCELLED
    assert (store.key(key.id).balance, store.key(key.id).reserved) == (10, 0)


def test_expiry_deletes_old_finished_jobs_only(store: SqliteStore) -> None:
    done, _ = store.submit(new_job())
    waiting, _ = store.submit(new_job())
    store.claim()
    store.complete(done.id, [OUTPUT], {})
    store.add_log(done.id, "hello")
    assert store.expire(finished_before=0) == []
    expired = store.expire(finished_before=store.get(done.id).finished_at + 1)
    assert [job.id for job in expired] == [done.id] and expired[0].outputs == [OUTPUT]
    assert store.get(done.id) is None and store.logs(done.id) == []
    assert store.get(waiting.id) is not None


def test_keys_are_stored_hashed_and_revocable(store: SqliteStore, tmp_path: Path) -> None:
    key, secret = store.add_key("k", credits=1, rate_per_minute=5)
    assert secret.startswith("sk_") and len(secret) > 40
    on_disk = b"".join(path.read_bytes() for path in tmp_path.glob("jobs.sqlite3*"))
    # Under WAL the new row sits in the -wal file; finding its hash proves the scan reaches the row.
    assert hash_secret(secret).encode() in on_disk
    assert secret.encode() not in on_disk
    assert store.authenticate(secret).id == key.id
    assert store.authenticate(secret + "x") is None
    assert store.revoke_key(key.id) and store.authenticate(secret) is None
    assert not store.has_keys()


# A database as the first release wrote it (before schema versioning: user_version 0, no outbox).
FIRST_RELEASE_SCHEMA = """
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, endpoint TEXT NOT NULL,
    api TEXT NOT NULL, status TEXT NOT NULL, params TEXT NOT NULL, prompt TEXT NOT NULL,
    output_node TEXT NOT NULL, cost_micros INTEGER NOT NULL, key_id TEXT, idempotency_key TEXT,
    webhook_url TEXT, base_url TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL, started_at REAL,
    finished_at REAL, outputs TEXT, error TEXT, metrics TEXT, progress_value REAL, progress_total REAL,
    attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE job_logs (job_id TEXT NOT NULL, at REAL NOT NULL, message TEXT NOT NULL);
CREATE TABLE api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, secret_hash TEXT NOT NULL UNIQUE,
    balance_micros INTEGER NOT NULL, reserved_micros INTEGER NOT NULL DEFAULT 0,
    rate_per_minute INTEGER NOT NULL, created_at REAL NOT NULL, revoked_at REAL
);
CREATE TABLE webhook_deliveries (
    job_id TEXT NOT NULL, attempt INTEGER NOT NULL, at REAL NOT NULL, url TEXT NOT NULL,
    status_code INTEGER, error TEXT
);
INSERT INTO jobs (id, endpoint, api, status, params, prompt, output_node, cost_micros, webhook_url,
                  created_at, started_at, attempts)
VALUES ('00000000-0000-4000-8000-000000000001', 'solid-color', 'segmind', 'PROCESSING', '{}', '{}',
        '1', 0, 'https://example.com/hook', 1.0, 2.0, 1);
"""


def test_a_first_release_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as old:
        old.executescript(FIRST_RELEASE_SCHEMA)
    store = SqliteStore(path)
    assert store._query("PRAGMA user_version")[0][0] == 3
    job_id = "00000000-0000-4000-8000-000000000001"
    assert store.recover() == (1, 0) and store.get(job_id).status == JobStatus.QUEUED
    store.claim()
    store.complete(job_id, [], {})  # finishing it queues its webhook in the table version 2 added
    assert store.claim_webhook(now=time.time() + 1, lease_seconds=10).job_id == job_id
    store.close()
    assert SqliteStore(path)._query("PRAGMA user_version")[0][0] == 3  # reopening changes nothing


def test_a_database_from_a_newer_engine_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    with sqlite3.connect(path) as newer:
        newer.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaTooNew, match="schema version 99"):
        SqliteStore(path)
