"""The worker: one thread that owns the GPU, taking queued jobs one at a time and running their graphs.

It knows jobs and the graph executor, not HTTP: what it learns while a job runs (node started,
sampler step, preview) goes to the store (logs, progress) and to the broadcast (live listeners).
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from engine.graph.events import Event, ExecutionFailed, NodeProgress, NodeStarted
from engine.graph.execute import Executor
from engine.graph.validate import validate_prompt
from engine.jobs.broadcast import JobBroadcast, JobUpdate
from engine.jobs.sqlite_store import SqliteStore
from engine.jobs.types import Job, JobStatus, OutputFile

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 1.0
PROGRESS_INTERVAL_SECONDS = 0.2
PREVIEW_MAX_SIZE = 256


def _preview_data_url(image: Any) -> str | None:
    """A small JPEG data URL of a sampler preview (a PIL image), for live listeners."""
    if not hasattr(image, "save"):
        return None
    image = image.copy()
    image.thumbnail((PREVIEW_MAX_SIZE, PREVIEW_MAX_SIZE))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=70)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def _describe_failure(failure: ExecutionFailed) -> str:
    node = f"{failure.node_type} (node {failure.node_id})"
    return f"{node} failed: {failure.exception_type}: {failure.exception_message}"


class Worker:
    def __init__(
        self,
        store: SqliteStore,
        executor: Executor,
        broadcast: JobBroadcast,
        on_finished: Callable[[Job], None] = lambda _: None,
    ) -> None:
        self.store = store
        self.executor = executor
        self.broadcast = broadcast
        self.on_finished = on_finished
        self.current: Job | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._interrupt = threading.Event()
        self._thread: threading.Thread | None = None

    # -- control, from any thread -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="engine-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after interrupting the running job, which goes back to the queue for the next start."""
        self._stop.set()
        self._interrupt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        current = self.current
        if current is not None and current.id == job_id:
            self._interrupt.set()

    def warm_up(self, prompt: dict[str, Any]) -> str | None:
        """Run a graph once outside the queue (before `start`); returns why it failed, or None."""
        validation = validate_prompt(self.executor.registry, prompt)
        if validation.validated is None:
            return "the warm-up graph is invalid"
        result = self.executor.run(validation.validated, prompt_id=f"warm-up-{time.time_ns()}")
        if isinstance(result.failure, ExecutionFailed):
            return _describe_failure(result.failure)
        return None

    # -- the loop, on the worker thread ------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.claim()
            if job is None:
                self._wake.wait(IDLE_POLL_SECONDS)
                self._wake.clear()
                continue
            try:
                self.run(job)
            except Exception:  # the loop must survive anything a job does
                log.exception("job %s crashed the worker loop", job.id)
                self._finished(self.store.fail(job.id, "internal error while running the job"))

    def run(self, job: Job) -> None:
        self.current = job
        self._interrupt.clear()
        self.broadcast.publish(JobUpdate(job.id, "status", {"status": JobStatus.PROCESSING}))
        self.store.add_log(job.id, "started")
        try:
            self._execute(job)
        finally:
            self.current = None

    def _execute(self, job: Job) -> None:
        queue_time = (job.started_at or time.time()) - job.created_at
        validation = validate_prompt(self.executor.registry, job.prompt)
        if validation.validated is None:
            messages = [
                f"node {n} ({e.class_type}): {x.message} {x.details}"
                for n, e in validation.node_errors.items()
                for x in e.errors
            ]
            reason = "; ".join(messages) or (
                validation.error.message if validation.error else "invalid graph"
            )
            self._finished(
                self.store.fail(job.id, f"the graph is invalid: {reason}", {"queue_time": queue_time})
            )
            return

        started = time.perf_counter()
        result = self.executor.run(
            validation.validated, prompt_id=job.id, on_event=self._listener(job), interrupt=self._interrupt
        )
        metrics = {
            "inference_time": round(time.perf_counter() - started, 4),
            "queue_time": round(queue_time, 4),
        }

        if result.status == "success":
            images = (result.outputs.get(job.output_node) or {}).get("images", [])
            outputs = [_output_file(entry) for entry in images]
            self.store.add_log(job.id, f"completed in {metrics['inference_time']:.2f}s")
            self._finished(self.store.complete(job.id, outputs, metrics))
        elif result.status == "interrupted":
            if self._stop.is_set():
                self.store.requeue(job.id)
            else:
                self._finished(self.store.mark_cancelled(job.id))
        else:
            assert isinstance(result.failure, ExecutionFailed)
            message = _describe_failure(result.failure)
            self.store.add_log(job.id, message)
            self._finished(self.store.fail(job.id, message, metrics))

    def _finished(self, job: Job | None) -> None:
        if job is None:
            return
        self.broadcast.publish(JobUpdate(job.id, "status", {"status": job.status, "error": job.error}))
        self.on_finished(job)

    def _listener(self, job: Job) -> Callable[[Event], None]:
        last_progress = 0.0

        def listen(event: Event) -> None:
            nonlocal last_progress
            if isinstance(event, NodeStarted):
                message = f"running {event.class_type} (node {event.display_node})"
                self.store.add_log(job.id, message)
                self.broadcast.publish(
                    JobUpdate(job.id, "log", {"message": message, "timestamp": time.time()})
                )
            elif isinstance(event, NodeProgress):
                now = time.monotonic()
                if event.value < event.total and now - last_progress < PROGRESS_INTERVAL_SECONDS:
                    return
                last_progress = now
                self.store.set_progress(job.id, event.value, event.total)
                data = {"node": event.node_id, "value": event.value, "max": event.total}
                self.broadcast.publish(JobUpdate(job.id, "progress", data))
                preview = _preview_data_url(event.preview) if event.preview is not None else None
                if preview is not None:
                    self.broadcast.publish(JobUpdate(job.id, "preview", {"image": preview}))

        return listen


def _output_file(entry: dict[str, Any]) -> OutputFile:
    return OutputFile(
        filename=entry["filename"],
        subfolder=entry.get("subfolder", ""),
        content_type=entry.get("content_type", "image/png"),
        width=int(entry.get("width", 0)),
        height=int(entry.get("height", 0)),
        size=int(entry.get("size", 0)),
    )
