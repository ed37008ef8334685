"""A fleet's job store on Redis: the `JobStore` interface for many API processes and many workers.

Jobs are hashes (kept for the retention period once finished, then Redis drops them), queued per
endpoint in sorted sets (ComfyUI's `number` and `front` order a queue, which a stream cannot), and
leased to the worker running them through a stream per endpoint with one consumer group: a worker
claims a job by reading its entry (XREADGROUP, the worker's name as consumer), its heartbeats reset the
entry's idle time, and a worker that stops sending them loses the job to the next worker that claims
after the lease (XAUTOCLAIM): at-least-once execution. A result is recorded only from PROCESSING and
only from the worker holding the job, so completion and its charge happen once. Every change that
must happen whole is a Lua script (redis_scripts); the key layout is in redis_layout.

Listing (`list_jobs`, `forget`) reads only the jobs its indexes hold for the query: the key's own jobs
(`owned:{key}`), the API's (`api:{api}`), both when both are asked for, narrowed to the unfinished or
the finished ones when only those are asked for, or just the ids asked for; it filters and sorts those
here as the SQLite store's WHERE and ORDER BY would. When the indexes hold exactly the jobs the query
selects and the order is theirs (creation), the page is cut from them first and only its jobs are read.
A fleet polling ComfyUI's /queue so reads its few unfinished jobs, not every job kept for the retention
period, and ComfyUI's /history reads ComfyUI's finished jobs, not the other APIs'.

A Redis server that cannot be reached, or refuses writes for memory, raises `StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.jobs import redis_scripts as scripts
from engine.jobs.keys import hash_secret
from engine.jobs.redis_layout import DEFAULT_PREFIX, job_from_hash, key_from_hash, pairs, queue_member
from engine.jobs.sqlite_jobs import MAX_ATTEMPTS, MICROS, to_micros
from engine.jobs.store import LOCAL_WORKER, Delivery, JobIdTaken, JobQuery, StoreUnavailable, WebhookDue
from engine.jobs.types import (
    ApiKey,
    InsufficientCredits,
    Job,
    JobStatus,
    LogLine,
    NewJob,
    OutputFile,
    RunReport,
)

T = TypeVar("T")

DEFAULT_LEASE_SECONDS = 30.0
"""How long a running job's worker may go without a heartbeat before another worker takes the job."""
MAX_CONNECTIONS = 64
"""Connections one process opens to Redis at most; a burst of requests waits for one to be free
(a script takes microseconds) instead of opening hundreds."""
CONNECTION_WAIT_SECONDS = 20.0
KEEP_AFTER_RETENTION_SECONDS = 600.0
"""A finished job's hash outlives the retention period by this much, so that `expire` (every minute)
still finds it and its files are deleted with it; Redis drops it even if no process expires it."""


def _job_key_fields(new: NewJob) -> list[str]:
    """The submitted job's hash fields that the submit script does not set itself."""
    fields: dict[str, str | None] = {
        "api": new.api,
        "params": json.dumps(new.params),
        "prompt": json.dumps(new.prompt),
        "output_node": new.output_node,
        "webhook_url": new.webhook_url,
        "base_url": new.base_url,
        "created_at": repr(time.time()),
        "extra_data": json.dumps(new.extra_data),
        "targets": json.dumps(list(new.targets)) if new.targets is not None else None,
    }
    return [item for name, value in fields.items() if value is not None for item in (name, value)]


def _result_fields(
    outputs: list[OutputFile] | None = None,
    error: str | None = None,
    metrics: dict[str, float] | None = None,
    report: RunReport | None = None,
) -> list[str]:
    fields: dict[str, str | None] = {
        "outputs": json.dumps([o.to_json() for o in outputs]) if outputs else None,
        "error": error,
        "metrics": json.dumps(metrics) if metrics else None,
        "report": json.dumps(report.to_json()) if report is not None else None,
    }
    return [item for name, value in fields.items() if value is not None for item in (name, value)]


UNFINISHED = frozenset({JobStatus.QUEUED, JobStatus.PROCESSING})
FINISHED = frozenset(JobStatus) - UNFINISHED
DROP_BATCH = 500
"""Jobs deleted by one script at most, so that forgetting thousands never holds Redis for long."""


def _indexes(query: JobQuery) -> list[str]:
    """The sorted sets every job the query may select is in, to intersect: the first scored by seq (every
    job, the owner's, the API's or the unfinished ones), the others narrowing it to the owner's, the API's,
    and the unfinished or finished jobs when the query asks for only such statuses."""
    sets = []
    if query.owner is not None:
        sets.append(f"owned:{query.owner}")
    if query.api is not None:
        sets.append(f"api:{query.api}")
    if query.statuses is not None and query.statuses <= UNFINISHED:
        sets.append("unfinished")
    elif query.statuses is not None and query.statuses <= FINISHED:
        sets.append("finished")
    if not sets or sets[0] == "finished":
        sets.insert(0, "jobs")
    return sets


def _exactly_indexed(query: JobQuery) -> bool:
    """Whether the indexes `_indexes` names hold exactly the jobs the query selects, in its order (seq is
    the order of creation: the submit script keeps created_at from going backwards), so a page can be
    cut from them before any job is read."""
    if query.order != "created" or query.ids is not None or query.workflow_id is not None:
        return False
    if query.statuses not in (None, UNFINISHED, FINISHED, UNFINISHED | FINISHED):
        return False
    return query.dequeued or (query.statuses is not None and JobStatus.CANCELLED not in query.statuses)


def _sort_key(job: Job, order: str) -> tuple[Any, ...]:
    """The same order as the SQLite store's ORDER BY for each `JobOrder`."""
    if order == "queue":
        return (job.number, job.seq)
    if order == "created":
        return (job.created_at, job.seq)
    if order == "finished":
        return (job.finished_at is None, job.finished_at or 0.0, job.seq)
    duration = (
        job.finished_at - job.started_at
        if job.finished_at is not None and job.started_at is not None
        else 0.0
    )
    return (duration, job.seq)


def _selected(job: Job, query: JobQuery) -> bool:
    if query.api is not None and job.api != query.api:
        return False
    if query.owner is not None and job.key_id != query.owner:
        return False
    if query.statuses is not None and job.status not in query.statuses:
        return False
    if not query.dequeued and job.status == JobStatus.CANCELLED and job.started_at is None:
        return False
    if query.ids is not None and job.id not in query.ids:
        return False
    if query.workflow_id is not None:
        workflow = job.extra_data.get("extra_pnginfo", {})
        workflow = workflow.get("workflow", {}) if isinstance(workflow, dict) else {}
        if not isinstance(workflow, dict) or workflow.get("id") != query.workflow_id:
            return False
    return True


async def guarded(url: str, awaitable: Awaitable[T]) -> T:
    """Await a Redis call, its failures that are the server's, not the request's, as `StoreUnavailable`
    (503). Shielded: a caller cancelled mid-command (a task stopping) leaves the command to finish on its
    connection, which redis-py would otherwise drop, at times swallowing the cancellation with it."""
    try:
        return await asyncio.shield(awaitable)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise StoreUnavailable(f"the Redis server at {url} cannot be reached: {exc}") from exc
    except ResponseError as exc:
        if str(exc).startswith(("OOM", "MISCONF", "READONLY")):
            raise StoreUnavailable(f"the Redis server refused a write: {exc}", full=True) from exc
        raise


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        retention_seconds: float = 3600.0,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        """A job whose workers stopped this many times while running it is failed, not run again."""
        self._ttl_ms = round((retention_seconds + KEEP_AFTER_RETENTION_SECONDS) * 1000)
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=CONNECTION_WAIT_SECONDS, decode_responses=True
        )
        self.redis: aioredis.Redis = aioredis.Redis.from_pool(pool)
        self._scripts = {
            name: self.redis.register_script(getattr(scripts, name))
            for name in (
                "SUBMIT",
                "CLAIM",
                "FINISH",
                "CANCEL",
                "REQUEUE",
                "HEARTBEAT",
                "NOTE",
                "CLAIM_WEBHOOK",
                "WEBHOOK_ATTEMPTED",
                "CLAIM_ONCE",
                "RATE_LIMIT",
                "DROP",
                "PAGE",
                "BACKFILL",
            )
        }
        self._indexed = False
        """Whether this process has made sure the listing indexes exist (BACKFILL, once per store)."""

    async def _script(self, name: str, *args: str | int | float) -> Any:
        return await self._call(cast(Awaitable[Any], self._scripts[name](args=[self.prefix, *args])))

    async def _call(self, awaitable: Awaitable[Any]) -> Any:
        """A command's reply (redis-py types replies loosely: they are str with decode_responses)."""
        return await guarded(self.url, awaitable)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def close(self) -> None:
        await self.redis.aclose()

    # -- jobs ------------------------------------------------------------------------------------------

    async def submit(self, new: NewJob) -> tuple[Job, bool]:
        cost = to_micros(new.cost)
        reply = await self._script(
            "SUBMIT",
            new.id,
            new.key_id or "",
            new.idempotency_key or "",
            cost,
            repr(float(new.number)) if new.number is not None else "",
            "1" if new.front else "0",
            new.endpoint,
            *_job_key_fields(new),
        )
        if reply[0] == "taken":
            raise JobIdTaken(new.id)
        if reply[0] == "credits":
            raise InsufficientCredits(new.cost, float(reply[1]) / MICROS)
        return job_from_hash(pairs(reply[1])), reply[0] == "created"

    async def _jobs(self, job_ids: list[str]) -> list[Job]:
        """The jobs that still exist, in the order asked."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self._key("job", job_id))
        found = await self._call(pipe.execute())
        return [job_from_hash(fields) for fields in found if fields]

    async def get(self, job_id: str) -> Job | None:
        fields = await self._call(self.redis.hgetall(self._key("job", job_id)))
        return job_from_hash(fields) if fields else None

    async def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._key("job", job_id), "status")
        found = await self._call(pipe.execute())
        return {
            job_id: JobStatus(status)
            for job_id, status in zip(job_ids, found, strict=True)
            if status is not None
        }

    async def queue_position(self, job: Job) -> int | None:
        if job.status != JobStatus.QUEUED:
            return None
        queued = self._key("queued")
        rank = await self._call(self.redis.zrank(queued, queue_member(job.seq, job.id)))
        if rank is not None:
            return int(rank)
        return int(await self._call(self.redis.zcount(queued, "-inf", f"({job.number!r}")))

    async def queue_depth(self) -> int:
        return int(await self._call(self.redis.zcard(self._key("queued"))))

    async def queue_depths(self) -> dict[str, int]:
        endpoints = sorted(await self._call(self.redis.smembers(self._key("endpoints"))))
        if not endpoints:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for endpoint in endpoints:
                pipe.zcard(self._key("queue", endpoint))
            counts = await self._call(pipe.execute())
        return {endpoint: int(count) for endpoint, count in zip(endpoints, counts, strict=True) if count}

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        if not self._indexed:
            await self._script("BACKFILL")
            self._indexed = True
        if query.ids is not None:
            candidates = sorted(query.ids)
        elif _exactly_indexed(query):
            return await self._page(query)
        else:
            candidates = await self._candidates(query)
        selected = [job for job in await self._jobs(candidates) if _selected(job, query)]
        selected.sort(key=lambda job: _sort_key(job, query.order), reverse=query.descending)
        end = None if query.limit is None else query.offset + query.limit
        return selected[query.offset : end], len(selected)

    async def _candidates(self, query: JobQuery) -> list[str]:
        """The ids of every job the query may select: its indexes' (intersected in Redis, which walks
        the smaller set)."""
        sets = [self._key(name) for name in _indexes(query)]
        if len(sets) == 1:
            return cast(list[str], await self._call(self.redis.zrange(sets[0], 0, -1)))
        return cast(list[str], await self._call(self.redis.zinter(sets)))

    async def _page(self, query: JobQuery) -> tuple[list[Job], int]:
        """The page cut from the indexes that hold exactly the query's jobs, then its jobs read. One that
        changed in between (finished, in a listing of unfinished ones) is left out, as a listing a moment
        later would leave it out."""
        reply = await self._script(
            "PAGE",
            query.offset,
            query.limit if query.limit is not None else -1,
            "1" if query.descending else "0",
            *_indexes(query),
        )
        jobs = await self._jobs([str(job_id) for job_id in reply[1:]])
        return [job for job in jobs if _selected(job, query)], int(reply[0])

    async def forget(self, query: JobQuery) -> int:
        jobs, _ = await self.list_jobs(JobQuery(**{**query.__dict__, "offset": 0, "limit": None}))
        finished = [job.id for job in jobs if job.finished_at is not None]
        await self._drop(finished)
        return len(finished)

    async def _drop(self, job_ids: list[str]) -> None:
        """Delete finished jobs with their logs, webhook records, idempotency key and index entries."""
        for start in range(0, len(job_ids), DROP_BATCH):
            await self._script("DROP", *job_ids[start : start + DROP_BATCH])

    async def claim(
        self,
        *,
        worker: str = LOCAL_WORKER,
        endpoints: frozenset[str] | None = None,
        preferred: frozenset[str] = frozenset(),
    ) -> Job | None:
        allowed = sorted(endpoints) if endpoints is not None else []
        reply = await self._script(
            "CLAIM",
            worker,
            repr(time.time()),
            round(self.lease_seconds * 1000),
            self.max_attempts,
            self._ttl_ms,
            len(allowed) if endpoints is not None else -1,
            *allowed,
            *sorted(preferred),
        )
        if reply[0] == "none":
            return None
        return job_from_hash(pairs(reply[1]))

    async def heartbeat(self, job_id: str, worker: str) -> bool:
        return bool(await self._script("HEARTBEAT", job_id, worker))

    async def set_progress(self, job_id: str, value: float, total: float) -> None:
        await self._script("NOTE", job_id, "progress", "value", repr(value), "total", repr(total))

    async def _finish(
        self, job_id: str, status: JobStatus, worker: str | None, fields: list[str]
    ) -> Job | None:
        reply = await self._script(
            "FINISH", job_id, worker or "", status.value, repr(time.time()), self._ttl_ms, *fields
        )
        return job_from_hash(pairs(reply)) if reply else None

    async def complete(
        self,
        job_id: str,
        outputs: list[OutputFile],
        metrics: dict[str, float],
        report: RunReport | None = None,
        *,
        worker: str | None = None,
    ) -> Job | None:
        fields = _result_fields(outputs=outputs, metrics=metrics, report=report)
        return await self._finish(job_id, JobStatus.COMPLETED, worker, fields)

    async def fail(
        self,
        job_id: str,
        error: str,
        metrics: dict[str, float] | None = None,
        report: RunReport | None = None,
        *,
        worker: str | None = None,
    ) -> Job | None:
        fields = _result_fields(error=error, metrics=metrics, report=report)
        return await self._finish(job_id, JobStatus.FAILED, worker, fields)

    async def _cancel(self, job_id: str, *, only_queued: bool) -> Job | None:
        reply = await self._script(
            "CANCEL", job_id, repr(time.time()), self._ttl_ms, "1" if only_queued else "0"
        )
        return job_from_hash(pairs(reply)) if reply else None

    async def cancel(self, job_id: str) -> Job | None:
        return await self._cancel(job_id, only_queued=False)

    async def dequeue(self, job_id: str) -> Job | None:
        return await self._cancel(job_id, only_queued=True)

    async def requeue(self, job_id: str, *, worker: str | None = None) -> None:
        await self._script("REQUEUE", job_id, worker or "")

    async def mark_cancelled(
        self, job_id: str, report: RunReport | None = None, *, worker: str | None = None
    ) -> Job | None:
        fields = _result_fields(error="cancelled by the client", report=report)
        return await self._finish(job_id, JobStatus.CANCELLED, worker, fields)

    async def add_log(self, job_id: str, message: str) -> None:
        await self._script("NOTE", job_id, "log", "message", message, "at", repr(time.time()))

    async def logs(self, job_id: str) -> list[LogLine]:
        entries = await self._call(self.redis.xrange(self._key("log", job_id)))
        return [
            LogLine(fields["message"], float(fields["at"]))
            for _, fields in entries
            if fields.get("kind") == "log"
        ]

    async def expire(self, finished_before: float) -> list[Job]:
        ids = await self._call(
            self.redis.zrangebyscore(self._key("finished"), "-inf", f"({finished_before!r}")
        )
        jobs = await self._jobs(ids)
        await self._drop(ids)  # with those Redis dropped already (their TTL ran out): their index entries
        return jobs

    # -- webhooks --------------------------------------------------------------------------------------

    async def claim_webhook(self, now: float, lease_seconds: float) -> WebhookDue | None:
        reply = await self._script("CLAIM_WEBHOOK", repr(now), repr(lease_seconds))
        return WebhookDue(reply[0], reply[1], int(reply[2])) if reply else None

    async def webhook_attempted(
        self, due: WebhookDue, status_code: int | None, error: str | None, retry_at: float | None
    ) -> None:
        delivery = {
            "attempt": due.attempt,
            "at": time.time(),
            "url": due.url,
            "status_code": status_code,
            "error": error,
        }
        await self._script(
            "WEBHOOK_ATTEMPTED",
            due.job_id,
            json.dumps(delivery),
            repr(retry_at) if retry_at is not None else "",
        )

    async def next_webhook_at(self) -> float | None:
        head = await self._call(self.redis.zrange(self._key("outbox"), 0, 0, withscores=True))
        return float(head[0][1]) if head else None

    async def deliveries(self, job_id: str) -> list[Delivery]:
        entries = await self._call(self.redis.lrange(self._key("deliveries", job_id), 0, -1))
        return [Delivery(job_id=job_id, **json.loads(entry)) for entry in entries]

    # -- keys ------------------------------------------------------------------------------------------

    async def authenticate(self, secret: str) -> ApiKey | None:
        key_id = await self._call(self.redis.get(self._key("keyhash", hash_secret(secret))))
        if key_id is None:
            return None
        key = await self.key(key_id)
        return key if key is not None and key.revoked_at is None else None

    async def has_keys(self) -> bool:
        return bool(await self._call(self.redis.scard(self._key("keys:live"))))

    async def key(self, key_id: str) -> ApiKey | None:
        fields = await self._call(self.redis.hgetall(self._key("key", key_id)))
        return key_from_hash(fields) if fields else None

    async def rate_limit(self, key_id: str, per_minute: int) -> float:
        if per_minute <= 0:
            return 0.0
        return float(await self._script("RATE_LIMIT", key_id, per_minute))

    # -- Comfy API v2 idempotency keys -------------------------------------------------------------------

    async def claim_idempotency_key(
        self, owner: str, scope: str, key: str, now: float, lifetime: float
    ) -> bool:
        name = "once:" + json.dumps([owner, scope, key])
        return bool(await self._script("CLAIM_ONCE", name, repr(now), repr(lifetime)))

    async def release_idempotency_key(self, owner: str, scope: str, key: str) -> None:
        await self._call(self.redis.delete(self._key("once:" + json.dumps([owner, scope, key]))))
