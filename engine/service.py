"""The running service: node registry, endpoints, job store, worker, webhooks, wired once at start-up.

The HTTP layer talks to this object only (submit, look up, wait, cancel); it never touches the
executor or tensors. Its role says which parts run in this process:

- "embedded" (the default): everything in one process: the API, the worker's loop and the webhook
  sender on the event loop, the graphs on a worker thread, the SQLite statements on a thread of their own.
- "api" (`engine serve --broker`): the API, webhooks and expiry, no worker; as many such processes as
  wanted, behind any load balancer, since every one reads the same store and hears every update. It
  refuses an endpoint whose warm-up failed on every worker, as the registry says (`unavailable`).
- "worker" (`engine worker --broker`): the worker only: claims jobs, runs them on its device, beats in
  the worker registry, publishes updates. It sends no webhooks: rendering a result for a client is the
  HTTP layer's (its URLs, its API's shape), an API process is the one facing the network, and a slow
  webhook target must not hold a GPU; the store's outbox with its leases lets many API processes share
  the sending without sending twice.

Outputs are written to the output folder, which in a fleet is one shared folder that every process
reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from engine import folders
from engine.assets.blobs import BlobFolder
from engine.assets.library import AssetLibrary
from engine.assets.outputs import OutputAssets
from engine.assets.redis_assets import RedisAssetStore
from engine.assets.store import AssetStore
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.sampling.device_thread import DeviceThread
from engine.endpoints import Endpoint, Params, load_endpoints
from engine.endpoints import publish as publishing
from engine.endpoints.sharing import export_workflow, import_request
from engine.endpoints.warm_up import warm_up_prompt
from engine.graph.cache import OutputCache
from engine.graph.execute import Executor
from engine.graph.registry import NodeRegistry
from engine.jobs.broadcast import JobBroadcast, JobUpdate
from engine.jobs.durations import Durations, MemoryDurations, RedisDurations, expected_wait
from engine.jobs.fleet import BEAT_SECONDS, WorkerInfo, WorkerRegistry, failed_everywhere
from engine.jobs.outputs import JobOutputs
from engine.jobs.redis_keys import RedisKeyAdmin
from engine.jobs.redis_store import RedisStore
from engine.jobs.sqlite_async import AsyncSqliteStore
from engine.jobs.sqlite_store import SqliteStore
from engine.jobs.store import LOCAL_WORKER, JobQuery, JobStore, KeyAdmin, StoreUnavailable
from engine.jobs.tasks import cancel_all
from engine.jobs.types import ApiKey, Job, JobStatus, LogLine, NewJob, OutputFile
from engine.jobs.webhooks import WebhookSender, load_or_create_secret
from engine.jobs.worker import Worker, WorkerHealth
from engine.metrics import Metrics
from engine.nodes import create_registry
from engine.settings import Settings
from engine.test_weights import prepare_models

log = logging.getLogger(__name__)


Role = Literal["embedded", "api", "worker"]

EXPIRY_INTERVAL_SECONDS = 60.0
WAIT_POLL_SECONDS = 1.0
WARMUP_SUBFOLDER = "warm-up"
FLEET_REFRESH_SECONDS = 1.0
"""How often an API process reads the worker registry for the endpoints whose warm-up failed on every
worker: a submit reads the copy in memory, never Redis, and a worker's new entry (BEAT_SECONDS apart)
is seen within a second of its beat."""
API_READY = "ready (API only: workers run the jobs)"


@dataclass
class Readiness:
    """What /ready reports. An endpoint whose warm-up failed is marked unavailable (503 with the reason)
    and listed in `warmup_failed`, but the server still becomes ready: its other endpoints serve, as they
    do beside an endpoint whose model file is missing, and a probe failing on one bad endpoint would take
    them all out of rotation (see `engine.api.meta.ready`)."""

    ready: bool = False
    reason: str = "starting"
    warmup_seconds: dict[str, float] = field(default_factory=dict)
    warmup_failed: dict[str, str] = field(default_factory=dict)
    """Endpoint -> why its warm-up failed (a missing tokenizer file, a failing node); in an API process
    of a fleet, the endpoints whose warm-up failed on every worker (`Service.unavailable`)."""


@dataclass(frozen=True)
class QueuePlace:
    """Where a queued job stands: jobs ahead of it, and the seconds until its result as measured runs
    of its endpoint suggest (None until one has run)."""

    position: int | None
    eta_seconds: float | None = None


class Service:
    def __init__(self, settings: Settings, role: Role = "embedded") -> None:
        if role != "embedded" and settings.broker is None:
            raise ValueError(f"a service in the {role} role needs a broker (--broker redis://...)")
        self.settings = settings
        self.role: Role = role
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        """This process's name as a worker (the registry, the store's claims)."""
        self.started_at = time.time()
        self.test_weights = prepare_models(settings)
        self.registry: NodeRegistry
        self.registry, self.package_reports = create_registry(settings.custom_nodes_dirs)
        self.endpoints: dict[str, Endpoint] = load_endpoints(settings.graphs_dir, self.registry)
        self.store: JobStore
        self.keys: KeyAdmin
        """API keys, managed synchronously (the command line, tests); the routes use `store`."""
        asset_store: AssetStore
        if settings.broker is None:
            database = SqliteStore(settings.database_path)
            self.recovered = database.recover()
            sqlite = AsyncSqliteStore(database)
            self.store, self.keys, asset_store = sqlite, database, sqlite
        else:  # a fleet: its workers' leases, not this process's start, decide what runs again
            self.recovered = (0, 0)
            fleet = RedisStore(
                settings.broker,
                retention_seconds=settings.retention_seconds,
                lease_seconds=settings.lease_seconds,
            )
            self.store, self.keys = fleet, RedisKeyAdmin(settings.broker)
            asset_store = RedisAssetStore(fleet.redis, fleet.prefix, settings.broker)
        self.assets = AssetLibrary(asset_store, BlobFolder(settings.assets_path), settings.max_asset_bytes)
        self.outputs = JobOutputs(folders.get_output_directory())
        self.models = ModelManager(
            torch.device(settings.device) if settings.device else None, performance=settings.performance
        )
        self.device_thread = DeviceThread(str(self.models.device))
        """Where the samplers run (engine.diffusion.sampling.device_thread)."""
        self.executor = Executor(
            self.registry,
            OutputCache(settings.cache_bytes),
            {"models": self.models, "device_thread": self.device_thread},
        )
        self.webhook_secret = load_or_create_secret(settings.data_path / "webhook_secret")
        self.readiness = Readiness()
        self.metrics = Metrics(self.models.memory_in_use, self.executor.cache)
        self.models.add_load_listener(self._model_loaded)
        self.worker: Worker | None = None
        self.broadcast: JobBroadcast | None = None
        self.webhooks: WebhookSender | None = None
        self.registry_of_workers: WorkerRegistry | None = None
        self.durations: Durations = MemoryDurations()
        self.jobs_done = 0
        self._tasks: list[asyncio.Task[Any]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._beat_now = asyncio.Event()
        self._publishing = asyncio.Lock()

    # -- lifecycle -------------------------------------------------------------------------------------

    @property
    def runs_worker(self) -> bool:
        return self.role != "api"

    @property
    def serves_api(self) -> bool:
        return self.role != "worker"

    async def start(self, render_webhook: Callable[[Job], dict[str, Any]] | None = None) -> None:
        """Start working; `render_webhook` is how the HTTP layer shows a finished job to its webhook
        (needed by the roles that serve the API, which send the webhooks)."""
        loop = asyncio.get_running_loop()
        broker = self.settings.broker
        if broker is not None:
            from engine.jobs.redis_broadcast import RedisBroadcast

            self.broadcast = RedisBroadcast(loop, broker)
            self.durations = RedisDurations(broker)
            self.registry_of_workers = WorkerRegistry(broker)
        else:
            self.broadcast = JobBroadcast(loop)
        await self.broadcast.start()
        self.broadcast.on_update(self._heard)
        if self.serves_api:
            assert render_webhook is not None, "a service that serves the API sends webhooks"
            self.webhooks = WebhookSender(
                self.store,
                render_webhook,
                self.webhook_secret,
                allow_private=self.settings.allow_private_webhooks,
                delays=self.settings.webhook_delays,
            )
            await self._sweep_outputs(strays=True)
            await self.assets.sweep()
            self._tasks.append(asyncio.create_task(self._expire_forever(), name="expiry"))
            self._tasks.append(asyncio.create_task(self.webhooks.run_forever(), name="webhooks"))
        if self.runs_worker:
            overlaps = self.settings.performance.overlaps(self.models.device.type)
            self.worker = Worker(
                self.store,
                self.executor,
                self.broadcast,
                self.outputs,
                on_finished=self._finished,
                worker_id=self.worker_id if broker is not None else LOCAL_WORKER,
                preferred=self._loaded_endpoints,
                recorder=OutputAssets(self.assets, folders.get_output_directory()),
                overlap=self.device_thread if overlaps else None,
            )
            self.broadcast.on_cancel(self.worker.cancel)
            self._tasks.append(asyncio.create_task(self._warm_up_then_work(), name="warm-up"))
            if self.registry_of_workers is not None:
                self._tasks.append(asyncio.create_task(self._beat_forever(), name="worker-beat"))
        else:
            self.readiness.ready = True
            self.readiness.reason = API_READY
            assert self.registry_of_workers is not None
            self._tasks.append(asyncio.create_task(self._watch_fleet_forever(), name="fleet-watch"))

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        if self.worker is not None:
            await self.worker.stop()
        self.device_thread.close()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.registry_of_workers is not None:
            if self.worker is not None:
                with contextlib.suppress(Exception):  # a broker already gone: the entry expires instead
                    await self.registry_of_workers.leave(self.worker_id)
            await self.registry_of_workers.close()
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.broadcast is not None:
            await self.broadcast.close()
        await self.durations.close()
        self.models.remove_load_listener(self._model_loaded)
        await self.store.close()

    def _in_background(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        """A store or broker write that nothing waits for, kept until it is done (and awaited at stop)."""
        task = asyncio.create_task(coroutine, name=name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    def _model_loaded(self, _: object, seconds: float) -> None:
        self.metrics.observe_model_load(seconds)

    def _finished(self, job: Job) -> None:
        """A job this process's worker ran reached its final state."""
        self.metrics.observe_job(job)
        self.jobs_done += 1
        self._beat_now.set()
        seconds = job.metrics.get("inference_time")
        if job.status == JobStatus.COMPLETED and seconds is not None:
            self._in_background(self.durations.observe(job.endpoint, seconds), "durations")

    def _heard(self, update: JobUpdate) -> None:
        """Any process's update: a job queued wakes this worker (it may claim it now rather than at
        its next poll); a job over makes its webhook due now, wherever it ran."""
        status = update.data.get("status") if update.kind == "status" else None
        if status == JobStatus.QUEUED and self.worker is not None:
            self.worker.wake()
        if status == JobStatus.PROCESSING and self.running():
            self._beat_now.set()  # the registry shows the new job now, not at the next beat
        if isinstance(status, JobStatus) and status.terminal and self.webhooks is not None:
            self.webhooks.wake()

    async def _beat_forever(self) -> None:
        """Tell the registry this worker lives, what it holds and what it runs: every BEAT_SECONDS, and
        at once when it starts or finishes a job."""
        assert self.registry_of_workers is not None
        while True:
            self._beat_now.clear()
            try:
                await self.registry_of_workers.beat(self.worker_info())
            except Exception as exc:  # the broker is away: the next beat tries again
                log.warning("worker heartbeat not recorded: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(BEAT_SECONDS):
                    await self._beat_now.wait()

    async def _watch_fleet_forever(self) -> None:
        """An API process's view of the workers' failed warm-ups, read every FLEET_REFRESH_SECONDS into
        `readiness` (what /ready shows and `unavailable` reads). While the broker is away the last view
        stands: no submit gets through to it then anyway."""
        assert self.registry_of_workers is not None
        while True:
            try:
                failed = failed_everywhere(await self.registry_of_workers.workers())
            except Exception as exc:
                log.warning("worker registry not read: %s", exc)
            else:
                if failed != self.readiness.warmup_failed:
                    level = logging.WARNING if failed else logging.INFO
                    log.log(level, "unavailable after a failed warm-up on every worker: %s", failed or "none")
                self.readiness.warmup_failed = failed
                names = ", ".join(failed)
                self.readiness.reason = (
                    f"{API_READY}; unavailable after a failed warm-up on every worker: {names}"
                    if failed
                    else API_READY
                )
            await asyncio.sleep(FLEET_REFRESH_SECONDS)

    def unavailable(self, endpoint: Endpoint) -> str | None:
        """Why `endpoint` takes no requests now, or None: the one place that says so for the routes.

        Its own reason first (a model file missing here; in the roles that run a worker, its warm-up
        failed here, see `_warm_up_then_work`). In an API process of a fleet the workers warm up, not
        this process: an endpoint whose warm-up failed on every worker (engine.jobs.fleet.
        failed_everywhere) is refused with their reason, and served again once a worker without the
        failure beats (a worker fixed and restarted), without restarting this process."""
        if endpoint.unavailable is not None or self.runs_worker:
            return endpoint.unavailable
        failure = self.readiness.warmup_failed.get(endpoint.id)
        return None if failure is None else f"its warm-up failed on every worker: {failure}"

    def _loaded_endpoints(self) -> frozenset[str]:
        """The endpoints whose graphs name a model file resident on this worker's device: it claims
        their jobs first, since they run without loading anything."""
        files = {Path(key.path).name for key in self.models.resident()}
        if not files:
            return frozenset()
        return frozenset(
            name
            for name, endpoint in self.endpoints.items()
            if any(
                isinstance(value, str) and Path(value).name in files
                for node in endpoint.graph.values()
                for value in node.get("inputs", {}).values()
            )
        )

    def worker_info(self) -> WorkerInfo:
        running = self.running()
        current = running[0] if running else None
        return WorkerInfo(
            id=self.worker_id,
            device=str(self.models.device),
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self.started_at,
            last_beat=time.time(),
            models=[key.name for key in self.models.resident()],
            current_job=current.id if current is not None else None,
            current_endpoint=current.endpoint if current is not None else None,
            jobs=[job.id for job in running],
            jobs_done=self.jobs_done,
            warming_up=not self.readiness.ready,
            warmup_failed=dict(self.readiness.warmup_failed),
        )

    async def fleet_workers(self) -> list[WorkerInfo]:
        """The workers alive: the registry's in a fleet, this process's own in the embedded default."""
        if self.registry_of_workers is not None:
            return await self.registry_of_workers.workers()
        health = self.health()
        return [self.worker_info()] if health is not None and health.alive else []

    async def queue_depths(self) -> dict[str, int]:
        """Jobs waiting per endpoint."""
        return await self.store.queue_depths()

    def health(self) -> WorkerHealth | None:
        """The worker's state once it exists; None while the service is starting."""
        return self.worker.health() if self.worker is not None else None

    async def _warm_up_then_work(self) -> None:
        """Run each warm-up endpoint once (models load, kernels compile) before taking jobs, at the least
        size and steps its nodes allow (engine.endpoints.warm_up) so that /ready comes soon; one that fails
        would fail every request the same way, so it is made unavailable with the reason instead."""
        assert self.worker is not None
        names = self.settings.warmup_endpoints
        if names is None:
            names = tuple(name for name, endpoint in self.endpoints.items() if endpoint.unavailable is None)
        for name in names:
            endpoint = self.endpoints.get(name)
            if endpoint is None or endpoint.unavailable is not None:
                continue
            self.readiness.reason = f"warming up {name}"
            started = time.perf_counter()
            prompt = warm_up_prompt(
                endpoint,
                self.registry,
                output_prefix=f"{WARMUP_SUBFOLDER}/{name}",
                keep_shapes=self.models.accelerator.compiles,
            )
            failure = await self.worker.warm_up(prompt)
            self.readiness.warmup_seconds[name] = round(time.perf_counter() - started, 3)
            if failure is not None:
                log.error("warm-up of %s failed, so it is unavailable: %s", name, failure)
                self.readiness.warmup_failed[name] = failure
                self.endpoints[name] = replace(endpoint, unavailable=f"its warm-up failed: {failure}")
        shutil.rmtree(self.outputs.output_dir / WARMUP_SUBFOLDER, ignore_errors=True)
        self.worker.start()
        self.readiness.ready = True
        self._beat_now.set()  # the registry shows the warm-up's outcome now, not at the next beat
        failed = ", ".join(self.readiness.warmup_failed)
        self.readiness.reason = f"ready; unavailable after a failed warm-up: {failed}" if failed else "ready"
        log.info("ready: warm-up took %s", self.readiness.warmup_seconds or "no time (nothing to warm up)")

    async def _expire_forever(self) -> None:
        while True:
            try:
                await self.expire()
            except StoreUnavailable as exc:
                log.warning("expiry skipped: %s", exc)
            await asyncio.sleep(EXPIRY_INTERVAL_SECONDS)

    async def expire(self) -> int:
        """Forget jobs finished longer ago than the retention period, and delete their files and any
        other job's files that no completed job owns; then the assets that expired, the outputs of the
        jobs just forgotten among them."""
        expired = await self.store.expire(time.time() - self.settings.retention_seconds)
        await self._sweep_outputs(strays=False)
        await self.assets.expire()
        return len(expired)

    def expires_at(self, job: Job) -> float:
        """When the job (and with it its output assets) is forgotten; while it runs, as if it ended now."""
        return (job.finished_at or time.time()) + self.settings.retention_seconds

    async def _sweep_outputs(self, *, strays: bool) -> None:
        owners = sorted(self.outputs.owners())
        statuses = await self.store.statuses(owners)
        keep = {
            job_id
            for job_id, status in statuses.items()
            if status not in (JobStatus.FAILED, JobStatus.CANCELLED)
        }
        self.outputs.sweep(keep, strays=strays)

    # -- what the API calls ------------------------------------------------------------------------------

    async def submit(
        self,
        endpoint: Endpoint,
        params: Params,
        *,
        api: str,
        key: ApiKey | None,
        base_url: str,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
    ) -> tuple[Job, bool]:
        """Store and queue a request; (job, created). Raises InsufficientCredits.

        `webhook_url` must have passed webhook_targets.check_target (async: it resolves names)."""
        job_id = str(uuid.uuid4())
        new = NewJob(
            id=job_id,
            endpoint=endpoint.id,
            api=api,
            params={**params.values, "seed": params.seed},
            prompt=endpoint.build(params, output_prefix=self.outputs.prefix(job_id)),
            output_node=endpoint.output.node,
            cost=endpoint.cost(params),
            key_id=key.id if key is not None else None,
            idempotency_key=idempotency_key,
            webhook_url=webhook_url,
            base_url=base_url,
        )
        job, created = await self.store.submit(new)
        if created:
            self._queued(job)
        return job, created

    async def submit_graph(
        self,
        prompt: dict[str, Any],
        *,
        job_id: str,
        api: str,
        endpoint: str,
        key: ApiKey | None,
        base_url: str,
        targets: tuple[str, ...],
        extra_data: dict[str, Any],
        number: float | None = None,
        front: bool = False,
    ) -> Job:
        """Queue a validated graph as it was sent (ComfyUI's /prompt): no endpoint, no cost, and its
        own `targets` as the output nodes to run. Raises JobIdTaken if `job_id` is in use."""
        new = NewJob(
            id=job_id,
            endpoint=endpoint,
            api=api,
            params={},
            prompt=prompt,
            output_node="",
            cost=0.0,
            key_id=key.id if key is not None else None,
            base_url=base_url,
            number=number,
            front=front,
            extra_data=extra_data,
            targets=targets,
        )
        job, _ = await self.store.submit(new)
        self._queued(job)
        return job

    def _queued(self, job: Job) -> None:
        if self.worker is not None:
            self.worker.wake()
        if self.broadcast is not None:  # the queue changed: whoever shows its length hears of it
            self.broadcast.publish(JobUpdate(job.id, "status", {"status": job.status}))

    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job, or ask the worker running it (in whichever process) to interrupt it."""
        job = await self.store.cancel(job_id)
        if job is not None and self.broadcast is not None:
            self.broadcast.request_cancel(job_id)
            if job.status.terminal:
                self.broadcast.publish(
                    JobUpdate(job.id, "status", {"status": job.status, "error": job.error})
                )
        return job

    async def dequeue(self, job_id: str) -> Job | None:
        """Cancel the job if it is still queued, never stopping a running one; None if it was not queued."""
        job = await self.store.dequeue(job_id)
        if job is not None and self.broadcast is not None:
            self.broadcast.publish(JobUpdate(job.id, "status", {"status": job.status, "error": job.error}))
        return job

    async def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once it is finished, or as it is when `timeout` runs out (None if it is unknown)."""
        deadline = time.monotonic() + timeout
        with self.updates(job_id) as updates:
            while True:
                job = await self.store.get(job_id)
                remaining = deadline - time.monotonic()
                if job is None or job.status.terminal or remaining <= 0:
                    return job
                with contextlib.suppress(TimeoutError):  # re-read the store at least every poll interval
                    await asyncio.wait_for(updates.get(), min(remaining, WAIT_POLL_SECONDS))

    async def job(self, job_id: str) -> Job | None:
        return await self.store.get(job_id)

    async def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        """A page of the jobs the query selects and how many it selects in all."""
        return await self.store.list_jobs(query)

    async def forget(self, query: JobQuery) -> int:
        """Delete the finished jobs the query selects, and their output assets; returns how many."""
        forgotten = await self.store.forget(query)
        if forgotten:
            await self.assets.expire()
        return forgotten

    def running(self) -> tuple[Job, ...]:
        """The jobs this process's worker is running now (two at most, while it overlaps jobs)."""
        return self.worker.running if self.worker is not None else ()

    async def running_jobs(self) -> list[Job]:
        """The jobs running now: this process's worker's, or with no worker here (an API process of a
        fleet), every worker's as the store has them."""
        if self.worker is not None:
            return list(self.worker.running)
        jobs, _ = await self.store.list_jobs(JobQuery(statuses=frozenset({JobStatus.PROCESSING})))
        return jobs

    async def free(self, *, unload_models: bool, free_memory: bool) -> None:
        """Unload every model (ComfyUI's /free `unload_models`); with `free_memory` also drop the cached
        node outputs, so the next run computes everything again. A running job keeps what it holds."""
        if free_memory:
            self.executor.cache.clear()
        if unload_models or free_memory:
            await asyncio.to_thread(self.models.unload_all)

    async def queue_position(self, job: Job) -> int | None:
        return await self.store.queue_position(job)

    async def queue_place(self, job: Job) -> QueuePlace:
        """The job's place in the queue and, while it waits, the expected seconds until its result."""
        position = await self.store.queue_position(job)
        if position is None:
            return QueuePlace(None)
        typical = await self.durations.typical(job.endpoint)
        if typical is None:
            return QueuePlace(position)
        workers = max(1, len(await self.fleet_workers()))
        return QueuePlace(position, round(expected_wait(position, workers, typical), 2))

    async def logs(self, job_id: str) -> list[LogLine]:
        return await self.store.logs(job_id)

    @contextlib.contextmanager
    def updates(self, job_id: str) -> Iterator[asyncio.Queue[JobUpdate]]:
        """Live updates of one job (status, logs, progress, previews) while the block runs."""
        assert self.broadcast is not None, "the service is not started"
        with self.broadcast.listen(job_id) as queue:
            yield queue

    @contextlib.contextmanager
    def all_updates(self) -> Iterator[asyncio.Queue[JobUpdate]]:
        """Live updates of every job, the executor's own events included, while the block runs."""
        assert self.broadcast is not None, "the service is not started"
        with self.broadcast.listen_all() as queue:
            yield queue

    # -- publishing endpoints (the admin routes) ---------------------------------------------------------

    async def publish(self, declaration: Any, *, dry_run: bool = False) -> tuple[Endpoint, bool]:
        """Compile, check and write a published endpoint, and serve it from now on; (endpoint, replaced).

        Raises publishing.PublishError. The checks read model headers and the template is written to
        disk, so they run on a thread; one publish at a time, so two with one name cannot interleave.
        Requests already queued keep the prompt they were built with. `self.endpoints` is replaced,
        never changed in place, so a handler reading it sees the old set or the new one whole.
        A dry run checks all the same and changes nothing: (the endpoint it would serve, would replace)."""
        async with self._publishing:
            endpoint = await asyncio.to_thread(
                publishing.publish,
                declaration,
                self.settings.graphs_dir,
                self.registry,
                self.endpoints,
                dry_run=dry_run,
            )
            replaced = endpoint.id in self.endpoints
            if dry_run:
                return endpoint, replaced
            self.endpoints = {**self.endpoints, endpoint.id: endpoint}
        log.info("%s endpoint %s", "replaced" if replaced else "published", endpoint.id)
        return endpoint, replaced

    async def unpublish(self, name: str) -> Endpoint:
        """Stop serving a published endpoint and delete its template. Raises publishing.PublishError."""
        async with self._publishing:
            endpoint = await asyncio.to_thread(
                publishing.unpublish, name, self.settings.graphs_dir, self.endpoints
            )
            self.endpoints = {key: value for key, value in self.endpoints.items() if key != name}
        log.info("unpublished endpoint %s", name)
        return endpoint

    async def export(self, name: str) -> dict[str, Any]:
        """The endpoint as one shareable editor workflow (engine.endpoints.sharing), laid out and
        checked on a thread: a graph of thousands of nodes takes seconds."""
        endpoint = self.endpoints.get(name)
        if endpoint is None:
            raise publishing.PublishError("not_found", f"no endpoint named '{name}'")
        return await asyncio.to_thread(export_workflow, endpoint, self.registry)

    async def import_shared(
        self, data: Any, *, name: str | None = None, replace: bool = False, dry_run: bool = False
    ) -> tuple[Endpoint, bool]:
        """Publish the endpoint a shared workflow file declares (see `export`)."""
        return await self.publish(import_request(data, name=name, replace=replace), dry_run=dry_run)

    async def authenticate(self, secret: str) -> ApiKey | None:
        return await self.store.authenticate(secret)

    async def key(self, key_id: str) -> ApiKey | None:
        return await self.store.key(key_id)

    async def has_keys(self) -> bool:
        return await self.store.has_keys()

    async def render_metrics(self) -> bytes:
        """This process's metrics, and the fleet's as the store and the registry tell them."""
        workers = await self.fleet_workers()
        return self.metrics.render(await self.store.queue_depth(), await self.queue_depths(), len(workers))

    def output_path(self, output: OutputFile) -> Path | None:
        """The file of a job's output, or None when it is gone or is not a plain file in the output folder."""
        return self.outputs.path(output)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s failed: %s", task.get_name(), task.exception())
