"""The worker: takes queued jobs and runs their graphs on threads beside the event loop.

One job at a time, unless it overlaps jobs (engine.diffusion.sampling.device_thread): then a second job
is taken once every job it runs has finished sampling, so that job's sampling runs while the one before
it decodes and saves its images. Each job has its own thread, interrupt and heartbeat.

It knows jobs and the graph executor, not HTTP: what it learns while a job runs (node started,
sampler step, preview) goes to the store (logs, progress, and at the end the run's report: every UI
output and ComfyUI's status messages) and to the broadcast (live listeners, and the executor's own
events for those who listen to every job).

The loop is a task on the event loop and the graph runs on a thread, so every store call is a plain
`await` on the same `JobStore` the routes use. The loop survives anything: a job that raises is
failed; a store that cannot write (a full disk) is retried with backoff while the worker keeps the
result it holds, and `health` says so until the store accepts it. Nothing accepted is lost: a job
whose result could not be recorded stays PROCESSING and is queued again after a restart.

While a job runs the worker sends the store a heartbeat: a fleet's store gives the job of a worker
whose heartbeats stop to another worker, and tells a worker that lost its job so, which stops it.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import io
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Protocol, TypeVar

from engine.diffusion.sampling.device_thread import DeviceThread
from engine.graph.events import Event, ExecutionFailed, NodeFinished, NodeProgress, NodeStarted
from engine.graph.execute import Executor, RunResult
from engine.graph.messages import timestamp_ms
from engine.graph.validate import validate_prompt
from engine.jobs.broadcast import JobBroadcast, JobUpdate
from engine.jobs.outputs import JobOutputs
from engine.jobs.run_report import RunRecorder
from engine.jobs.store import LOCAL_WORKER, JobStore, StoreUnavailable
from engine.jobs.types import Job, JobStatus, OutputFile

log = logging.getLogger(__name__)

T = TypeVar("T")

IDLE_POLL_SECONDS = 1.0
HEARTBEAT_SECONDS = 2.0
"""How often a running job's worker tells the store it is alive: well inside a fleet store's lease."""
PROGRESS_INTERVAL_SECONDS = 0.2
PREVIEW_MAX_SIZE = 256
STORE_RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0, 5.0)
"""Waits between attempts at a store that refused a write; the last repeats until it recovers."""
INTERNAL_ERROR = "internal error while running the job"
MAX_OVERLAPPING_JOBS = 2
"""Jobs a worker that overlaps jobs runs at once: one sampling, and one before or after its sampling
(more would only queue on the device's turn, holding jobs another worker of a fleet could run)."""


@dataclass(frozen=True)
class WorkerHealth:
    alive: bool
    running: tuple[str, ...]
    """The ids of the jobs being run, oldest first."""
    store_error: str | None
    """Why the store refused the worker's last attempt, while it keeps refusing."""
    store_failing_since: float | None
    crashed: str | None
    """Why the worker's loop ended, if it did."""

    @property
    def ok(self) -> bool:
        return self.alive and self.store_error is None


class OutputRecorder(Protocol):
    """Where the files a node saved become the job's durable results as the node finishes (the asset
    library: engine.assets.outputs)."""

    async def clear(self, job: Job) -> None:
        """Forget what an earlier, interrupted run of the job recorded."""
        ...

    async def record(self, job: Job, node_id: str, shown: dict[str, Any]) -> int:
        """Record the files a node's UI output names; returns how many it recorded."""
        ...


def _preview_jpeg(image: Any) -> bytes | None:
    """A small JPEG of a sampler preview (a PIL image), for live listeners."""
    if not hasattr(image, "save"):
        return None
    image = image.copy()
    image.thumbnail((PREVIEW_MAX_SIZE, PREVIEW_MAX_SIZE))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()


def _describe_failure(failure: ExecutionFailed) -> str:
    node = f"{failure.node_type} (node {failure.node_id})"
    return f"{node} failed: {failure.exception_type}: {failure.exception_message}"


def _output_file(entry: dict[str, Any]) -> OutputFile:
    return OutputFile(
        filename=entry["filename"],
        subfolder=entry.get("subfolder", ""),
        content_type=entry.get("content_type", "image/png"),
        width=int(entry.get("width", 0)),
        height=int(entry.get("height", 0)),
        size=int(entry.get("size", 0)),
    )


@dataclass
class _Running:
    job: Job
    interrupt: threading.Event = field(default_factory=threading.Event)
    sampled: bool = False
    """Its graph has had a sampling run back: what is left is mostly decoding and saving."""


class Worker:
    def __init__(
        self,
        store: JobStore,
        executor: Executor,
        broadcast: JobBroadcast,
        outputs: JobOutputs,
        on_finished: Callable[[Job], None] = lambda _: None,
        recorder: OutputRecorder | None = None,
        *,
        worker_id: str = LOCAL_WORKER,
        endpoints: frozenset[str] | None = None,
        preferred: Callable[[], frozenset[str]] = frozenset,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        overlap: DeviceThread | None = None,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        """This worker's name in the store (a fleet's consumer name)."""
        self.endpoints = endpoints
        """The endpoints whose jobs it takes (None: every one)."""
        self.preferred = preferred
        """The endpoints it takes first (those whose models it has loaded), asked before each claim."""
        self.heartbeat_seconds = heartbeat_seconds
        self.executor = executor
        self.broadcast = broadcast
        self.outputs = outputs
        self.on_finished = on_finished
        """Called on the event loop once a job's final state is stored, before listeners hear of it."""
        self.recorder = recorder
        self.overlap = overlap
        """When this worker overlaps jobs, the device thread the executor's sampler nodes run on (whose
        runs tell it when a job's sampling is over); None: one job at a time."""
        self._running: dict[str, _Running] = {}
        self._job_tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._store_error: str | None = None
        self._store_failing_since: float | None = None

    # -- control, on the event loop -----------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="engine-worker")

    @property
    def running(self) -> tuple[Job, ...]:
        """The jobs being run, oldest first."""
        return tuple(running.job for running in self._running.values())

    async def stop(self, timeout: float = 30.0) -> None:
        """Interrupt the running jobs, which go back to the queue for the next start, and end the loop."""
        self._stopping = True
        for running in self._running.values():
            running.interrupt.set()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
            except Exception:  # a crash was already logged and reported by `health`
                pass

    def wake(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        running = self._running.get(job_id)
        if running is not None:
            running.interrupt.set()

    def health(self) -> WorkerHealth:
        crashed = None
        if self._task is not None and self._task.done() and not self._task.cancelled():
            exc = self._task.exception()
            crashed = f"{type(exc).__name__}: {exc}" if exc is not None else "stopped"
        return WorkerHealth(
            alive=self._task is None or not self._task.done(),  # not started yet (warming up) is not dead
            running=tuple(self._running),
            store_error=self._store_error,
            store_failing_since=self._store_failing_since,
            crashed=crashed,
        )

    async def warm_up(self, prompt: dict[str, Any]) -> str | None:
        """Run a graph once outside the queue (before `start`); returns why it failed, or None."""
        validation = validate_prompt(self.executor.registry, prompt)
        if validation.validated is None:
            return "the warm-up graph is invalid"
        result = await asyncio.to_thread(
            self.executor.run, validation.validated, prompt_id=f"warm-up-{time.time_ns()}"
        )
        if isinstance(result.failure, ExecutionFailed):
            return _describe_failure(result.failure)
        return None

    # -- the loop ----------------------------------------------------------------------------------

    async def _loop(self) -> None:
        try:
            while not self._stopping:
                self._wake.clear()  # before claiming: a wake-up that comes during the claim is kept
                if not self._may_claim():
                    await self._wake.wait()  # a job ended, or ended its sampling
                    continue
                job = await self._stored(partial(self._claim, self.preferred()))
                if job is None:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), IDLE_POLL_SECONDS)
                    continue
                if self._stopping:  # claimed while stopping: the next start runs it
                    await self._stored(partial(self.store.requeue, job.id, worker=self.worker_id))
                    break
                running = self._running[job.id] = _Running(job)  # the next check counts it already
                task = asyncio.create_task(self._run_guarded(running), name=f"job-{job.id}")
                self._job_tasks.add(task)
                task.add_done_callback(self._job_tasks.discard)
        finally:
            await asyncio.gather(*self._job_tasks, return_exceptions=True)

    def _may_claim(self) -> bool:
        """Take another job when none runs, or (overlapping) when each one running has sampled."""
        if not self._running:
            return True
        return (
            self.overlap is not None
            and len(self._running) < MAX_OVERLAPPING_JOBS
            and all(running.sampled for running in self._running.values())
        )

    async def _run_guarded(self, running: _Running) -> None:
        job = running.job
        try:
            await self._run(running)
        except Exception:  # the loop must survive anything a job does
            log.exception("job %s crashed while running", job.id)
            await self._finished(
                await self._stored(partial(self.store.fail, job.id, INTERNAL_ERROR, worker=self.worker_id))
            )

    async def _claim(self, preferred: frozenset[str]) -> Job | None:
        """Looks the store's claim up at each attempt: a retried claim reaches a store that was repaired."""
        return await self.store.claim(worker=self.worker_id, endpoints=self.endpoints, preferred=preferred)

    async def _stored(self, call: Callable[[], Awaitable[T]]) -> T:
        """A store call that must happen: retried with backoff while the store refuses it, whatever
        the reason (an unexpected error too: the worker must outlive it)."""
        failures = 0
        while True:
            try:
                result = await call()
            except Exception as exc:
                if self._store_failing_since is None:
                    self._store_failing_since = time.time()
                    log.error(
                        "the job store refused a call; retrying until it accepts",
                        exc_info=not isinstance(exc, StoreUnavailable),
                    )
                self._store_error = (
                    str(exc) if isinstance(exc, StoreUnavailable) else f"{type(exc).__name__}: {exc}"
                )
                await asyncio.sleep(STORE_RETRY_SECONDS[min(failures, len(STORE_RETRY_SECONDS) - 1)])
                failures += 1
                continue
            if self._store_failing_since is not None:
                log.info("the job store accepts writes again")
            self._store_error = self._store_failing_since = None
            return result

    async def _noted(self, call: Awaitable[None]) -> None:
        """A store call that may be lost (a log line, a progress figure): never worth failing a job."""
        try:
            await call
        except StoreUnavailable as exc:
            log.warning("a log or progress update was not stored: %s", exc)

    async def _run(self, running: _Running) -> None:
        job = running.job
        try:
            self.broadcast.publish(JobUpdate(job.id, "status", {"status": JobStatus.PROCESSING}))
            await self._noted(self.store.add_log(job.id, "started"))
            self.outputs.clear(job.id)
            if self.recorder is not None:
                await self._stored(partial(self.recorder.clear, job))
            heartbeat = asyncio.create_task(self._heartbeat(running), name=f"heartbeat-{job.id}")
            try:
                await self._execute(running)
            finally:
                heartbeat.cancel()
                await asyncio.gather(heartbeat, return_exceptions=True)
        finally:
            del self._running[job.id]
            self._wake.set()

    def _sampled(self, running: _Running) -> None:
        """On the loop: the job's graph had a sampling run back, so the next job may start sampling."""
        running.sampled = True
        self._wake.set()

    async def _heartbeat(self, running: _Running) -> None:
        """Tell the store the job is alive until cancelled; stop the run once the job is not ours."""
        job = running.job
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                ours = await self.store.heartbeat(job.id, self.worker_id)
            except StoreUnavailable as exc:
                log.warning("heartbeat of job %s not stored: %s", job.id, exc)
                continue
            if not ours:
                log.warning("job %s is no longer this worker's (its lease ran out): stopping it", job.id)
                running.interrupt.set()
                return

    async def _execute(self, running: _Running) -> None:
        job = running.job
        queue_time = (job.started_at or time.time()) - job.created_at
        validation = validate_prompt(self.executor.registry, job.prompt, job.targets)
        if validation.validated is None:
            messages = [
                f"node {n} ({e.class_type}): {x.message} {x.details}"
                for n, e in validation.node_errors.items()
                for x in e.errors
            ]
            reason = "; ".join(messages) or (
                validation.error.message if validation.error else "invalid graph"
            )
            error = f"the graph is invalid: {reason}"
            await self._finished(
                await self._stored(
                    lambda: self.store.fail(job.id, error, {"queue_time": queue_time}, worker=self.worker_id)
                )
            )
            return

        started = time.perf_counter()
        recorder = RunRecorder()
        committing: list[concurrent.futures.Future[None]] = []
        loop = asyncio.get_running_loop()
        run = partial(
            self.executor.run,
            validation.validated,
            prompt_id=job.id,
            extra_data=job.extra_data,
            on_event=self._listener(job, loop, recorder, committing),
            interrupt=running.interrupt,
        )
        if self.overlap is not None:
            device_thread = self.overlap

            def sampled() -> None:
                loop.call_soon_threadsafe(self._sampled, running)

            def run_watched() -> RunResult:
                with device_thread.watching(sampled):
                    return run()

            result = await asyncio.to_thread(run_watched)
        else:
            result = await asyncio.to_thread(run)
        for commit in committing:  # every output is recorded before the job's final state is stored
            await asyncio.wrap_future(commit)
        report = recorder.report(result.outputs)
        metrics = {
            "inference_time": round(time.perf_counter() - started, 4),
            "queue_time": round(queue_time, 4),
        }

        if result.status == "success":
            images = (result.outputs.get(job.output_node) or {}).get("images", [])
            outputs = [_output_file(entry) for entry in images]
            await self._noted(self.store.add_log(job.id, f"completed in {metrics['inference_time']:.2f}s"))
            await self._finished(
                await self._stored(
                    lambda: self.store.complete(job.id, outputs, metrics, report, worker=self.worker_id)
                )
            )
        elif result.status == "interrupted":
            if self._stopping:
                await self._stored(lambda: self.store.requeue(job.id, worker=self.worker_id))
            else:
                await self._finished(
                    await self._stored(
                        lambda: self.store.mark_cancelled(job.id, report, worker=self.worker_id)
                    )
                )
        else:
            assert isinstance(result.failure, ExecutionFailed)
            message = _describe_failure(result.failure)
            await self._noted(self.store.add_log(job.id, message))
            await self._finished(
                await self._stored(
                    lambda: self.store.fail(job.id, message, metrics, report, worker=self.worker_id)
                )
            )

    async def _finished(self, job: Job | None) -> None:
        """Record (metrics, webhook wake-up) before publishing, so whoever sees the final status also
        sees everything that follows from it."""
        if job is None:
            return
        if job.status != JobStatus.COMPLETED:
            self.outputs.clear(job.id)
        self.on_finished(job)
        self.broadcast.publish(JobUpdate(job.id, "status", {"status": job.status, "error": job.error}))

    async def _commit_outputs(self, job: Job, node_id: str, shown: dict[str, Any]) -> None:
        """Record a finished node's saved files; a failure (a full disk) is logged, never the job's:
        the files are still in the output folder and ComfyUI's routes still serve them."""
        assert self.recorder is not None
        try:
            recorded = await self.recorder.record(job, node_id, shown)
        except Exception:
            log.exception("the outputs of job %s node %s were not recorded as assets", job.id, node_id)
            return
        if recorded:
            self.broadcast.publish(JobUpdate(job.id, "output", {"node": node_id}))

    def _listener(
        self,
        job: Job,
        loop: asyncio.AbstractEventLoop,
        recorder: RunRecorder,
        committing: list[concurrent.futures.Future[None]],
    ) -> Callable[[Event], None]:
        """Events arrive on the executor's thread; store writes are handed to the loop in order. Every
        event also goes out as it is to listeners of every job (without the preview image, which they
        get as JPEG bytes, encoded for each step only while someone listens)."""
        last_progress = 0.0

        def note(call: Awaitable[None]) -> None:
            asyncio.run_coroutine_threadsafe(self._noted(call), loop)

        def listen(event: Event) -> None:
            nonlocal last_progress
            stamp = {"timestamp": timestamp_ms()}
            recorder.observe(event, stamp["timestamp"])
            every_step = self.broadcast.listening_to_all
            if isinstance(event, NodeFinished) and event.output is not None and self.recorder is not None:
                commit = self._commit_outputs(job, event.node_id, dict(event.output))
                committing.append(asyncio.run_coroutine_threadsafe(commit, loop))
            if not isinstance(event, NodeProgress):
                if every_step:
                    self.broadcast.publish(JobUpdate(job.id, "event", stamp, event=event))
                if isinstance(event, NodeStarted):
                    message = f"running {event.class_type} (node {event.display_node})"
                    note(self.store.add_log(job.id, message))
                    self.broadcast.publish(
                        JobUpdate(job.id, "log", {"message": message, "timestamp": time.time()})
                    )
                return
            now = time.monotonic()
            throttled = event.value < event.total and now - last_progress < PROGRESS_INTERVAL_SECONDS
            preview = None
            if event.preview is not None and (every_step or not throttled):
                preview = _preview_jpeg(event.preview)
            if every_step:
                bare = replace(event, preview=None)
                self.broadcast.publish(JobUpdate(job.id, "event", stamp, event=bare, preview_jpeg=preview))
            if throttled:
                return
            last_progress = now
            note(self.store.set_progress(job.id, event.value, event.total))
            data = {"node": event.node_id, "value": event.value, "max": event.total}
            self.broadcast.publish(JobUpdate(job.id, "progress", data))
            if preview is not None:
                image = "data:image/jpeg;base64," + base64.b64encode(preview).decode()
                self.broadcast.publish(JobUpdate(job.id, "preview", {"image": image}))

        return listen
