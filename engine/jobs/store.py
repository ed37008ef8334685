"""The job store interface: what the API routes, the worker and the webhook sender may ask of storage.

Every method is a coroutine, so no route ever blocks the event loop on storage: the embedded SQLite
store runs its statements on a thread of its own (`AsyncSqliteStore`); a networked store (Redis, for a
fleet: `RedisStore`) implements the same protocol natively.

Workers name themselves (`worker`) when they claim a job and when they record its end. The embedded
store has one worker in the process and queues its running jobs again when it opens, so it ignores the
name; a fleet's store leases each claimed job to its worker while the worker's heartbeats keep coming,
gives the job to another worker once they stop, and refuses the first worker's late result.

A store that cannot write (a full disk, an I/O error, a lock held too long) raises `StoreUnavailable`:
the API answers 503 with Retry-After, and the worker keeps the result it holds and retries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from engine.jobs.types import ApiKey, Job, JobStatus, LogLine, NewJob, OutputFile, RunReport


class StoreUnavailable(Exception):
    """Storage refused a read or write for a reason outside the request (full disk, I/O error)."""

    def __init__(self, message: str, *, full: bool = False) -> None:
        super().__init__(message)
        self.full = full


class JobIdTaken(Exception):
    """A job with the id the client chose (ComfyUI's `prompt_id`) exists already."""


@dataclass(frozen=True)
class WebhookDue:
    """A finished job's webhook that is due for an attempt (`attempt` counts from 1)."""

    job_id: str
    url: str
    attempt: int


@dataclass(frozen=True)
class Delivery:
    """One recorded webhook attempt."""

    job_id: str
    attempt: int
    at: float
    url: str
    status_code: int | None
    error: str | None


JobOrder = Literal["queue", "created", "finished", "duration"]
"""queue: the order jobs run in (`number`, then arrival); created: arrival; finished: the time they
finished (unfinished last); duration: time spent running (0 for a job that has not finished)."""


@dataclass(frozen=True)
class JobQuery:
    """Which jobs to list, in which order, and which page of them."""

    api: str | None = None
    """Only jobs accepted by this API ("comfy"); None: every API's."""
    owner: str | None = None
    """Only this key's jobs; None: every key's (a server with open access)."""
    statuses: frozenset[JobStatus] | None = None
    dequeued: bool = True
    """Include jobs cancelled before they ran (ComfyUI forgets a prompt deleted from its queue)."""
    ids: frozenset[str] | None = None
    workflow_id: str | None = None
    """Only jobs whose `extra_data.extra_pnginfo.workflow.id` is this (the editor's workflow)."""
    order: JobOrder = "created"
    descending: bool = False
    offset: int = 0
    limit: int | None = None


LOCAL_WORKER = "local"
"""The name of the one worker inside an embedded service."""


class KeyAdmin(Protocol):
    """Managing API keys from the command line and from tests: synchronous, outside any event loop."""

    def add_key(
        self, name: str, credits: float, rate_per_minute: int, *, admin: bool = False
    ) -> tuple[ApiKey, str]: ...
    def list_keys(self) -> list[ApiKey]: ...
    def key(self, key_id: str) -> ApiKey | None: ...
    def has_keys(self) -> bool: ...
    def authenticate(self, secret: str) -> ApiKey | None: ...
    def revoke_key(self, key_id: str) -> bool: ...
    def add_credits(self, key_id: str, credits: float) -> ApiKey | None: ...


class JobStore(Protocol):
    # -- jobs ------------------------------------------------------------------------------------------
    async def submit(self, new: NewJob) -> tuple[Job, bool]: ...
    async def get(self, job_id: str) -> Job | None: ...
    async def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]: ...
    async def queue_position(self, job: Job) -> int | None: ...
    async def queue_depth(self) -> int: ...
    async def queue_depths(self) -> dict[str, int]:
        """Queued jobs per endpoint, leaving out endpoints with none (fleet status, /metrics)."""
        ...

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]: ...
    async def forget(self, query: JobQuery) -> int: ...
    async def claim(
        self,
        *,
        worker: str = LOCAL_WORKER,
        endpoints: frozenset[str] | None = None,
        preferred: frozenset[str] = frozenset(),
    ) -> Job | None:
        """The next job for this worker, now PROCESSING: only of `endpoints` (None: any), and of the
        `preferred` ones (whose models it has loaded) before any other; in queue order within each."""
        ...

    async def heartbeat(self, job_id: str, worker: str) -> bool:
        """The worker is still running the job; False once the job is no longer this worker's (another
        worker took it over after the lease ran out, or it finished), so the worker may stop it."""
        ...

    async def set_progress(self, job_id: str, value: float, total: float) -> None: ...
    async def complete(
        self,
        job_id: str,
        outputs: list[OutputFile],
        metrics: dict[str, float],
        report: RunReport | None = None,
        *,
        worker: str | None = None,
    ) -> Job | None: ...
    async def fail(
        self,
        job_id: str,
        error: str,
        metrics: dict[str, float] | None = None,
        report: RunReport | None = None,
        *,
        worker: str | None = None,
    ) -> Job | None: ...
    async def cancel(self, job_id: str) -> Job | None: ...
    async def dequeue(self, job_id: str) -> Job | None: ...
    async def requeue(self, job_id: str, *, worker: str | None = None) -> None: ...
    async def mark_cancelled(
        self, job_id: str, report: RunReport | None = None, *, worker: str | None = None
    ) -> Job | None:
        """complete, fail, requeue and mark_cancelled act only on a PROCESSING job, and with `worker`
        only while that worker holds it: a result that comes after another worker took over is None."""
        ...

    async def add_log(self, job_id: str, message: str) -> None: ...
    async def logs(self, job_id: str) -> list[LogLine]: ...
    async def expire(self, finished_before: float) -> list[Job]: ...

    # -- webhooks --------------------------------------------------------------------------------------
    async def claim_webhook(self, now: float, lease_seconds: float) -> WebhookDue | None: ...
    async def webhook_attempted(
        self, due: WebhookDue, status_code: int | None, error: str | None, retry_at: float | None
    ) -> None: ...
    async def next_webhook_at(self) -> float | None: ...
    async def deliveries(self, job_id: str) -> list[Delivery]: ...

    # -- keys ------------------------------------------------------------------------------------------
    async def authenticate(self, secret: str) -> ApiKey | None: ...
    async def has_keys(self) -> bool: ...
    async def key(self, key_id: str) -> ApiKey | None: ...
    async def rate_limit(self, key_id: str, per_minute: int) -> float:
        """Take one request from the key's allowance: 0 when allowed, else the seconds until one is
        free (a bucket refilling continuously, a minute's worth at most)."""
        ...

    # -- Comfy API v2 idempotency keys (single-use, per owner and operation) ---------------------------
    async def claim_idempotency_key(
        self, owner: str, scope: str, key: str, now: float, lifetime: float
    ) -> bool: ...
    async def release_idempotency_key(self, owner: str, scope: str, key: str) -> None: ...

    async def close(self) -> None: ...
