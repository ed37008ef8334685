"""Comfy API v2 jobs: submit an API-format workflow, poll it, read back its workflow, follow its events,
cancel it.

A v2 job is a ComfyUI job in the one store (api "comfy", as /prompt queues them), run by the one worker:
it shows in ComfyUI's queue and history too, and another key's job answers 404 here as if it did not
exist. Submission validates synchronously (structure, node classes, inputs, then asset references),
claims the Idempotency-Key for exactly that span (engine.api.v2.idempotency), and answers 201 once the
job is stored.

Outputs are assets of the job's owner (`job_id` set), recorded by the worker as each node finishes
(engine.assets.outputs), so `outputs` fills while the job runs and lists every output once it has
ended; the event stream sends each as an `output` event once recorded, and they are deleted with the
job. A queued or running job holds the assets its workflow references: deleting one answers 409
`asset_in_use`. `progress` is computed from the executor's events, which a `ProgressBoard` follows for
every job: nodes finished or cached out of those the run executes, plus the running sampler's step
fraction.

Each caller may follow at most `Settings.max_event_streams` event streams at once; one more answers
429 `too_many_streams` (polling the job is never limited).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import math
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from engine import folders
from engine.api.bodies import parse_json
from engine.api.comfy.records import COMFY_API, COMFY_ENDPOINT
from engine.api.context import api_key, base_url, service
from engine.api.errors import ApiError, json_response, strict_dumps
from engine.api.v2.auth import owner
from engine.api.v2.errors import PREFIX, V2Error, invalid
from engine.api.v2.idempotency import single_use
from engine.api.v2.render import timestamp
from engine.assets.outputs import job_owner
from engine.assets.resolve import MissingAssets, referenced_ids, resolve_assets
from engine.assets.types import format_hash
from engine.graph.events import ExecutionStarted, NodeFinished, NodeProgress, NodesCached, NodeStarted
from engine.graph.validate import validate_prompt
from engine.jobs.broadcast import JobUpdate
from engine.jobs.types import Job, JobStatus
from engine.service import Service

JOBS = PREFIX + "/jobs"
URL_LIFETIME_SECONDS = 3600
PROGRESS_INTERVAL_SECONDS = 0.5
"""The SSE stream's progress throttle (the specification's ~2/s)."""
KEEPALIVE_SECONDS = 15.0
MAX_INTEGER = 2**64
RESERVED_FIELDS = ("webhook_url", "inputs")
EXTRA_DATA_KEYS = ("api_key_comfy_org",)
_STATUS = {
    JobStatus.QUEUED: "queued",
    JobStatus.PROCESSING: "running",
    JobStatus.COMPLETED: "succeeded",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "canceled",
}
STREAMS_RETRY_AFTER_SECONDS = 10


# -- progress, from the executor's events -----------------------------------------------------------


@dataclass
class Snapshot:
    done: set[str] = field(default_factory=set)
    current_node: str | None = None
    current_class: str | None = None
    step: int | None = None
    steps: int | None = None
    preview: tuple[str, str] | None = None
    """(node id, base64 JPEG) of the latest sampler preview."""
    changed: float = 0.0


class ProgressBoard:
    """Every running job's progress, kept from the executor's own events (which only listeners of all jobs
    hear). Started by the first v2 jobs request; a job's snapshot is dropped once it is finished."""

    def __init__(self) -> None:
        self.snapshots: dict[str, Snapshot] = {}
        self._task: asyncio.Task[None] | None = None

    def ensure(self, engine: Service) -> None:
        if self._task is None and engine.broadcast is not None:
            self._task = asyncio.create_task(self._follow(engine), name="v2-progress")

    async def close(self, _: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, engine: Service) -> None:
        with engine.all_updates() as updates:
            while True:
                self.note(await updates.get())

    def note(self, update: JobUpdate) -> None:
        if update.kind == "status":
            status = update.data.get("status")
            if isinstance(status, JobStatus) and status.terminal:
                self.snapshots.pop(update.job_id, None)
            return
        event = update.event
        if update.kind != "event" or event is None:
            return
        if isinstance(event, ExecutionStarted):
            self.snapshots[update.job_id] = Snapshot()
            return
        snapshot = self.snapshots.setdefault(update.job_id, Snapshot())
        snapshot.changed = time.monotonic()
        if isinstance(event, NodesCached):
            snapshot.done.update(event.nodes)
        elif isinstance(event, NodeStarted):
            snapshot.current_node, snapshot.current_class = event.display_node, event.class_type
            snapshot.step = snapshot.steps = None
        elif isinstance(event, NodeProgress):
            snapshot.step, snapshot.steps = int(event.value), int(event.total)
            if update.preview_jpeg is not None:
                snapshot.preview = (event.node_id, base64.b64encode(update.preview_jpeg).decode())
        elif isinstance(event, NodeFinished):
            snapshot.done.add(event.node_id)
            snapshot.step = snapshot.steps = None


BOARD = web.AppKey("v2_progress_board", ProgressBoard)


def _board(request: web.Request) -> ProgressBoard:
    board = request.app[BOARD]
    board.ensure(service(request))
    return board


def needed_nodes(job: Job) -> set[str]:
    """The nodes the run executes: its output nodes and everything they take inputs from."""
    needed: set[str] = set()
    stack = list(job.targets if job.targets is not None else job.prompt)
    while stack:
        node_id = stack.pop()
        node = job.prompt.get(node_id)
        if node_id in needed or not isinstance(node, dict):
            continue
        needed.add(node_id)
        inputs = node.get("inputs")
        for value in inputs.values() if isinstance(inputs, dict) else ():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                stack.append(value[0])
    return needed


def progress_json(job: Job, snapshot: Snapshot | None) -> dict[str, Any] | None:
    """The specification's Progress: nodes finished (or cached) out of those the run executes, the
    running node's sampler steps counting as a fraction of one node."""
    needed = needed_nodes(job)
    total = len(needed)
    if job.status == JobStatus.COMPLETED:
        return {"value": 1.0, "nodes_done": total, "nodes_total": total, "message": None}
    if job.status != JobStatus.PROCESSING or snapshot is None:
        return None
    done = len(snapshot.done & needed)
    fraction = snapshot.step / snapshot.steps if snapshot.step is not None and snapshot.steps else 0.0
    value = min(1.0, max(0.0, (done + fraction) / total)) if total else 0.0
    message = None
    if snapshot.current_class is not None and snapshot.step is not None:
        message = f"{snapshot.current_class} {snapshot.step}/{snapshot.steps}"
    return {
        "value": round(value, 4),
        "nodes_done": done,
        "nodes_total": total,
        "current_node": snapshot.current_node,
        "current_node_class": snapshot.current_class,
        "step": snapshot.step,
        "steps": snapshot.steps,
        "message": message,
    }


# -- the Job object ------------------------------------------------------------------------------------


def _status(job: Job) -> str:
    if job.status == JobStatus.PROCESSING and job.cancel_requested:
        return "canceling"
    return _STATUS[job.status]


def _error(job: Job) -> dict[str, Any] | None:
    if job.status != JobStatus.FAILED:
        return None
    node_id = class_type = traceback = None
    messages = job.report.messages if job.report is not None else []
    for kind, data in messages:
        if kind == "execution_error":
            node_id, class_type = data.get("node_id"), data.get("node_type")
            trace = data.get("traceback")
            traceback = "".join(trace) if isinstance(trace, list) else None
    return {
        "code": "node_execution_error" if node_id is not None else "execution_error",
        "message": job.error or "the job failed",
        "node_id": node_id,
        "class_type": class_type,
        "traceback": traceback,
    }


async def outputs_json(request: web.Request, job: Job) -> list[dict[str, Any]]:
    """The outputs the worker has recorded so far, in the order it committed them."""
    expires = timestamp(time.time() + URL_LIFETIME_SECONDS)
    return [
        {
            "node_id": asset.node_id or "",
            "name": (asset.file_path or asset.id).rsplit("/", 1)[-1],
            "type": asset.output_type or "file",
            "content_type": asset.content_type,
            "size_bytes": asset.size_bytes,
            "id": asset.id,
            "hash": format_hash(asset.digest),
            "url": f"{base_url(request)}{PREFIX}/assets/{asset.id}/content",
            "url_expires_at": expires,
            "job_id": job.id,
        }
        for asset in await service(request).assets.job_outputs(job_owner(job), job.id)
    ]


async def job_json(request: web.Request, job: Job) -> dict[str, Any]:
    engine = service(request)
    position = await engine.queue_position(job) if job.status == JobStatus.QUEUED else None
    queue_ms = execution_ms = None
    if job.started_at is not None:
        queue_ms = int((job.started_at - job.created_at) * 1000)
        if job.finished_at is not None:
            execution_ms = int((job.finished_at - job.started_at) * 1000)
    expires = engine.expires_at(job)
    links = f"{JOBS}/{job.id}"
    return {
        "id": job.id,
        "status": _status(job),
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at) if job.started_at is not None else None,
        "completed_at": timestamp(job.finished_at) if job.finished_at is not None else None,
        "expires_at": timestamp(expires),
        "queue_position": position,
        "progress": progress_json(job, _board(request).snapshots.get(job.id)),
        "outputs": await outputs_json(request, job),
        "error": _error(job),
        "metrics": {"queue_ms": queue_ms, "execution_ms": execution_ms},
        "urls": {"self": links, "events": f"{links}/events", "cancel": f"{links}/cancel"},
    }


async def own_job(request: web.Request) -> Job:
    """The caller's ComfyUI job named in the path; anything else (another key's, unknown) is 404."""
    job = await service(request).job(request.match_info["id"])
    key = api_key(request)
    if job is None or job.api != COMFY_API or job.key_id != (key.id if key is not None else None):
        raise V2Error(404, "not_found", "no such job")
    return job


# -- submission ------------------------------------------------------------------------------------------


def _is_ui_format(workflow: dict[str, Any]) -> bool:
    return isinstance(workflow.get("nodes"), list) and "links" in workflow


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type not in ("application/json", "application/octet-stream"):
        raise invalid(422, "body", "send a JSON object (Content-Type: application/json)")
    try:
        body = parse_json(await request.read())
    except ApiError as exc:
        raise invalid(422, "body", exc.message) from exc
    if not isinstance(body, dict):
        raise invalid(422, "body", "the body must be a JSON object with a 'workflow'")
    for name in RESERVED_FIELDS:
        if name in body:
            raise invalid(422, name, f"'{name}' is reserved and not accepted yet")
    unknown = sorted(set(body) - {"workflow", "extra_data"})
    if unknown:
        raise invalid(
            422, unknown[0], f"unknown field {unknown[0][:60]!r}; the fields are workflow, extra_data"
        )
    extra = body.get("extra_data")
    if extra is not None:
        if not isinstance(extra, dict):
            raise invalid(422, "extra_data", "extra_data must be a JSON object")
        bad = sorted(set(extra) - set(EXTRA_DATA_KEYS))
        if bad:
            raise invalid(
                422,
                "extra_data",
                f"extra_data accepts only {', '.join(EXTRA_DATA_KEYS)}, not {bad[0][:60]!r}",
            )
        if not all(isinstance(value, str) for value in extra.values()):
            raise invalid(422, "extra_data", "extra_data values must be strings")
    workflow = body.get("workflow")
    if not isinstance(workflow, dict):
        raise invalid(422, "workflow", "workflow is required: an API-format graph (node id -> node)")
    return workflow


def _has_bad_number(value: Any) -> bool:
    """A number no node input can take: NaN, infinite, beyond a double (parsed as a Decimal), or an
    integer wider than 64 bits (ComfyUI's INT bound), which a FLOAT input could not convert."""
    stack = [value]
    while stack:
        item = stack.pop()
        if (
            isinstance(item, Decimal)
            or (isinstance(item, float) and not math.isfinite(item))
            or (isinstance(item, int) and abs(item) > MAX_INTEGER)
        ):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _invalid_workflow(message: str, node_errors: dict[str, Any]) -> V2Error:
    return V2Error(422, "invalid_workflow", message, details={"node_errors": node_errors})


async def _check_queue(engine: Service) -> None:
    limit = engine.settings.max_queue_depth
    if await engine.store.queue_depth() >= limit:
        raise V2Error(
            429,
            "queue_full",
            f"the queue holds its limit of {limit} jobs; retry later",
            headers={"Retry-After": str(engine.settings.queue_full_retry_seconds)},
        )


async def post_job(request: web.Request) -> web.Response:
    engine = service(request)
    _board(request)  # following every run before this one can start
    workflow = await _body(request)
    if _is_ui_format(workflow):
        raise V2Error(
            422,
            "workflow_format_ui",
            "this is a UI-format workflow (nodes and links); export it in API format and send that",
        )
    if _has_bad_number(workflow):
        raise invalid(422, "workflow", "the workflow holds a number out of range (NaN or infinite)")
    async with single_use(request, "jobs.submit"):
        await _check_queue(engine)
        resolved = await resolve_assets(
            workflow, owner(request), engine.assets, folders.get_input_directory()
        )
        if isinstance(resolved, MissingAssets):
            raise V2Error(
                422, "missing_asset", resolved.message(), details={"node_errors": resolved.node_errors()}
            )
        result = await asyncio.to_thread(validate_prompt, engine.registry, resolved, None)
        if result.validated is None:
            body = result.error_body()
            error = body.get("error") or {}
            node_errors = {
                node_id: [
                    {
                        "field": (e.get("extra_info") or {}).get("input_name"),
                        "reason": e.get("type"),
                        "message": e.get("message"),
                    }
                    for e in node.get("errors", [])
                ]
                for node_id, node in (body.get("node_errors") or {}).items()
            }
            raise _invalid_workflow(str(error.get("message") or "the workflow is invalid"), node_errors)
        cast = result.validated.prompt
        held = referenced_ids(workflow)
        stored = {str(node_id): cast.get(str(node_id), node) for node_id, node in resolved.items()}
        job = await engine.submit_graph(
            stored,
            job_id=str(uuid.uuid4()),
            api=COMFY_API,
            endpoint=COMFY_ENDPOINT,
            key=api_key(request),
            base_url=base_url(request),
            targets=result.validated.outputs,
            extra_data={"create_time": int(time.time() * 1000)},
        )
        if held:
            await engine.assets.hold(job.id, held)
    return json_response(await job_json(request, job), status=201)


# -- reading, cancelling, following -------------------------------------------------------------------


async def get_job(request: web.Request) -> web.Response:
    return json_response(await job_json(request, await own_job(request)))


async def get_workflow(request: web.Request) -> web.Response:
    job = await own_job(request)
    return json_response({"workflow": job.prompt, "format": "api"})


async def cancel_job(request: web.Request) -> web.Response:
    job = await own_job(request)
    if not job.status.terminal:
        job = await service(request).cancel(job.id) or job
    return json_response(await job_json(request, job))


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    await response.write(f"event: {event}\ndata: {strict_dumps(data)}\n\n".encode())


class StreamCounts:
    """How many event streams each caller has open, in this process."""

    def __init__(self) -> None:
        self.open: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def opened(self, caller: str, limit: int) -> Iterator[None]:
        """Count one more stream for the block; 429 `too_many_streams` when the caller has `limit`."""
        if self.open[caller] >= limit:
            raise V2Error(
                429,
                "too_many_streams",
                f"you already follow {limit} event streams, this server's limit; close one, or poll "
                "GET /api/v2/jobs/{id}",
                details={"limit": limit},
                headers={"Retry-After": str(STREAMS_RETRY_AFTER_SECONDS)},
            )
        self.open[caller] += 1
        try:
            yield
        finally:
            self.open[caller] -= 1
            if not self.open[caller]:
                del self.open[caller]


STREAMS = web.AppKey("v2_event_streams", StreamCounts)


async def job_events(request: web.Request) -> web.StreamResponse:
    """The job's state as it changes: status, progress (at most every half second), the latest preview,
    each output, and the terminal status last."""
    job = await own_job(request)
    engine = service(request)
    with request.app[STREAMS].opened(owner(request), engine.settings.max_event_streams):
        return await _follow(request, job)


async def _follow(request: web.Request, job: Job) -> web.StreamResponse:
    engine = service(request)
    board = _board(request)
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    with engine.updates(job.id) as updates:
        last_status: tuple[str, int | None] | None = None
        last_progress: dict[str, Any] | None = None
        last_preview: tuple[str, str] | None = None
        sent_outputs: set[str] = set()
        progress_sent = written = 0.0
        while True:
            job = await engine.job(job.id) or job
            position = await engine.queue_position(job) if job.status == JobStatus.QUEUED else None
            status = (_status(job), position)
            now = time.monotonic()
            if status != last_status and not job.status.terminal:  # a stream opens with the status
                await _send(response, "status", {"status": status[0], "queue_position": position})
                last_status, written = status, now
            for output in await outputs_json(request, job):
                if output["id"] not in sent_outputs:
                    await _send(response, "output", output)
                    sent_outputs.add(output["id"])
            if job.status.terminal:  # and ends with it, after every output
                await _send(response, "status", {"status": status[0], "queue_position": None})
                break
            snapshot = board.snapshots.get(job.id)
            progress = progress_json(job, snapshot)
            if progress not in (None, last_progress) and now - progress_sent >= PROGRESS_INTERVAL_SECONDS:
                await _send(response, "progress", progress)
                last_progress, progress_sent, written = progress, now, now
                if snapshot is not None and snapshot.preview not in (None, last_preview):
                    assert snapshot.preview is not None
                    node_id, data = snapshot.preview
                    preview = {"node_id": node_id, "content_type": "image/jpeg", "data_base64": data}
                    await _send(response, "preview", preview)
                    last_preview = snapshot.preview
            if now - written >= KEEPALIVE_SECONDS:
                await response.write(b": keep-alive\n\n")
                written = now
            # while it runs, the board is read at the throttle's pace (its events reach it on their own
            # queue, so a wake-up here can come before the snapshot it announces)
            wait = PROGRESS_INTERVAL_SECONDS if job.status == JobStatus.PROCESSING else KEEPALIVE_SECONDS
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(updates.get(), wait)
            while not updates.empty():
                updates.get_nowait()
    await response.write_eof()
    return response


def add_routes(app: web.Application) -> None:
    board = ProgressBoard()
    app[BOARD] = board
    app[STREAMS] = StreamCounts()
    app.on_cleanup.insert(0, board.close)
    app.router.add_post(JOBS, post_job)
    app.router.add_get(JOBS + "/{id}", get_job, allow_head=False)
    app.router.add_get(JOBS + "/{id}/workflow", get_workflow, allow_head=False)
    app.router.add_get(JOBS + "/{id}/events", job_events, allow_head=False)
    app.router.add_post(JOBS + "/{id}/cancel", cancel_job)
