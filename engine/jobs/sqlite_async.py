"""The embedded store behind the `JobStore` interface: SQLite statements on one thread of their own.

SQLite's Python driver blocks, so a statement run on the event loop stalls every request while it
waits for the file lock or the disk; under a burst of submitters that made `/health` take a second.
Here every call is handed to a single dedicated thread: the loop only awaits, statements keep their
order (a job's logs stay in sequence), and SQLite, which serialises writers anyway, loses nothing.

Errors of the environment (a full disk, an I/O error, a database locked past its timeout) become
`StoreUnavailable`; anything else is a bug and propagates as it is.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from engine.assets.types import Asset, NewAsset
from engine.jobs.rate_limit import RateLimiter
from engine.jobs.sqlite_store import SqliteStore
from engine.jobs.store import LOCAL_WORKER, Delivery, JobQuery, StoreUnavailable, WebhookDue
from engine.jobs.types import ApiKey, Job, JobStatus, LogLine, NewJob, OutputFile, RunReport

T = TypeVar("T")

SQLITE_FULL = 13
ENVIRONMENT_ERRORS = {
    5: "the database is busy",  # SQLITE_BUSY
    6: "the database is locked",  # SQLITE_LOCKED
    7: "out of memory",  # SQLITE_NOMEM
    8: "the database is read-only",  # SQLITE_READONLY
    10: "a disk I/O error",  # SQLITE_IOERR
    SQLITE_FULL: "the disk is full",
    14: "the database file cannot be opened",  # SQLITE_CANTOPEN
}
"""Primary SQLite result codes that say the storage, not the statement, is at fault."""


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or (code & 0xFF) not in ENVIRONMENT_ERRORS:
        return None
    primary = code & 0xFF
    return StoreUnavailable(
        f"storage failed: {ENVIRONMENT_ERRORS[primary]} ({exc})", full=primary == SQLITE_FULL
    )


class AsyncSqliteStore:
    """The embedded store. Its worker is the one in this process, so the worker names passed in are
    not recorded: `recover` queues running jobs again when the store opens, and no other worker can
    take a job over. Rate limits are counted in this process's memory."""

    def __init__(self, database: SqliteStore) -> None:
        self.database = database
        self._rates = RateLimiter()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-store")

    async def _run(self, call: Callable[[], T]) -> T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call)
        except sqlite3.Error as exc:
            unavailable = _unavailable(exc)
            if unavailable is None:
                raise
            raise unavailable from exc

    async def close(self) -> None:
        await self._run(self.database.close)
        self._thread.shutdown()

    # -- jobs ------------------------------------------------------------------------------------------

    async def submit(self, new: NewJob) -> tuple[Job, bool]:
        return await self._run(lambda: self.database.submit(new))

    async def get(self, job_id: str) -> Job | None:
        return await self._run(lambda: self.database.get(job_id))

    async def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        return await self._run(lambda: self.database.statuses(job_ids))

    async def queue_position(self, job: Job) -> int | None:
        return await self._run(lambda: self.database.queue_position(job))

    async def queue_depth(self) -> int:
        return await self._run(self.database.queue_depth)

    async def queue_depths(self) -> dict[str, int]:
        return await self._run(self.database.queue_depths)

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        return await self._run(lambda: self.database.list_jobs(query))

    async def forget(self, query: JobQuery) -> int:
        return await self._run(lambda: self.database.forget(query))

    async def claim(
        self,
        *,
        worker: str = LOCAL_WORKER,
        endpoints: frozenset[str] | None = None,
        preferred: frozenset[str] = frozenset(),
    ) -> Job | None:
        return await self._run(lambda: self.database.claim(endpoints, preferred))

    async def heartbeat(self, job_id: str, worker: str) -> bool:
        job = await self.get(job_id)
        return job is not None and job.status == JobStatus.PROCESSING

    async def set_progress(self, job_id: str, value: float, total: float) -> None:
        await self._run(lambda: self.database.set_progress(job_id, value, total))

    async def complete(
        self,
        job_id: str,
        outputs: list[OutputFile],
        metrics: dict[str, float],
        report: RunReport | None = None,
        *,
        worker: str | None = None,
    ) -> Job | None:
        return await self._run(lambda: self.database.complete(job_id, outputs, metrics, report))

    async def fail(
        self,
        job_id: str,
        error: str,
        metrics: dict[str, float] | None = None,
        report: RunReport | None = None,
        *,
        worker: str | None = None,
    ) -> Job | None:
        return await self._run(lambda: self.database.fail(job_id, error, metrics, report))

    async def cancel(self, job_id: str) -> Job | None:
        return await self._run(lambda: self.database.cancel(job_id))

    async def dequeue(self, job_id: str) -> Job | None:
        return await self._run(lambda: self.database.dequeue(job_id))

    async def requeue(self, job_id: str, *, worker: str | None = None) -> None:
        await self._run(lambda: self.database.requeue(job_id))

    async def mark_cancelled(
        self, job_id: str, report: RunReport | None = None, *, worker: str | None = None
    ) -> Job | None:
        return await self._run(lambda: self.database.mark_cancelled(job_id, report))

    async def add_log(self, job_id: str, message: str) -> None:
        await self._run(lambda: self.database.add_log(job_id, message))

    async def logs(self, job_id: str) -> list[LogLine]:
        return await self._run(lambda: self.database.logs(job_id))

    async def expire(self, finished_before: float) -> list[Job]:
        return await self._run(lambda: self.database.expire(finished_before))

    # -- webhooks --------------------------------------------------------------------------------------

    async def claim_webhook(self, now: float, lease_seconds: float) -> WebhookDue | None:
        return await self._run(lambda: self.database.claim_webhook(now, lease_seconds))

    async def webhook_attempted(
        self, due: WebhookDue, status_code: int | None, error: str | None, retry_at: float | None
    ) -> None:
        await self._run(lambda: self.database.webhook_attempted(due, status_code, error, retry_at))

    async def next_webhook_at(self) -> float | None:
        return await self._run(self.database.next_webhook_at)

    async def deliveries(self, job_id: str) -> list[Delivery]:
        return await self._run(lambda: self.database.deliveries(job_id))

    # -- keys ------------------------------------------------------------------------------------------

    async def authenticate(self, secret: str) -> ApiKey | None:
        return await self._run(lambda: self.database.authenticate(secret))

    async def has_keys(self) -> bool:
        return await self._run(self.database.has_keys)

    async def key(self, key_id: str) -> ApiKey | None:
        return await self._run(lambda: self.database.key(key_id))

    async def rate_limit(self, key_id: str, per_minute: int) -> float:
        return self._rates.acquire(key_id, per_minute)

    # -- Comfy API v2 idempotency keys -------------------------------------------------------------------

    async def claim_idempotency_key(
        self, owner: str, scope: str, key: str, now: float, lifetime: float
    ) -> bool:
        return await self._run(lambda: self.database.claim_idempotency_key(owner, scope, key, now, lifetime))

    async def release_idempotency_key(self, owner: str, scope: str, key: str) -> None:
        await self._run(lambda: self.database.release_idempotency_key(owner, scope, key))

    # -- assets (engine.assets.store.AssetStore) -------------------------------------------------------

    async def add_asset(self, new: NewAsset) -> Asset:
        return await self._run(lambda: self.database.add_asset(new))

    async def asset(self, owner: str, asset_id: str, now: float) -> Asset | None:
        return await self._run(lambda: self.database.asset(owner, asset_id, now))

    async def latest_asset_over(self, owner: str, digest: str, now: float) -> Asset | None:
        return await self._run(lambda: self.database.latest_asset_over(owner, digest, now))

    async def same_asset(
        self, owner: str, digest: str, file_path: str | None, tags: tuple[str, ...], now: float
    ) -> Asset | None:
        return await self._run(lambda: self.database.same_asset(owner, digest, file_path, tags, now))

    async def set_asset_expiry(self, asset_id: str, expires_at: float | None) -> Asset:
        return await self._run(lambda: self.database.set_asset_expiry(asset_id, expires_at))

    async def list_assets(
        self, owner: str, limit: int, before_seq: int | None, tag: str | None, now: float
    ) -> list[Asset]:
        return await self._run(lambda: self.database.list_assets(owner, limit, before_seq, tag, now))

    async def delete_asset(self, owner: str, asset_id: str, now: float) -> tuple[Asset, bool] | None:
        return await self._run(lambda: self.database.delete_asset(owner, asset_id, now))

    async def hold_assets(self, job_id: str, asset_ids: Iterable[str]) -> None:
        held = list(asset_ids)
        await self._run(lambda: self.database.hold_assets(job_id, held))

    async def job_assets(self, owner: str, job_id: str) -> list[Asset]:
        return await self._run(lambda: self.database.job_assets(owner, job_id))

    async def forget_job_assets(self, job_id: str) -> set[str]:
        return await self._run(lambda: self.database.forget_job_assets(job_id))

    async def expire_assets(self, now: float) -> set[str]:
        return await self._run(lambda: self.database.expire_assets(now))

    async def asset_digests(self) -> set[str]:
        return await self._run(self.database.asset_digests)
