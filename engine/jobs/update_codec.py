"""Job updates as JSON, to travel between the processes of a fleet (engine.jobs.redis_broadcast).

An update is its job id, kind and data; an executor event goes as its class name and fields, a preview
as base64. Decoding gives back the same `JobUpdate` an in-process listener would have had, so the
listeners (SSE, the ComfyUI websocket, the v2 progress board) cannot tell which process ran the job.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from engine.graph import events
from engine.jobs.broadcast import JobUpdate, UpdateKind
from engine.jobs.types import JobStatus

EVENT_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        events.ExecutionStarted,
        events.NodesCached,
        events.NodeStarted,
        events.NodeProgress,
        events.NodeFinished,
        events.ExecutionSucceeded,
        events.ExecutionFailed,
        events.ExecutionInterrupted,
    )
}
KINDS: frozenset[str] = frozenset(("status", "progress", "log", "preview", "event"))


class BadUpdate(ValueError):
    """A message on the updates channel that is not an update this version writes."""


def encode(update: JobUpdate) -> bytes:
    """The update as JSON; a sampler preview (a PIL image) must have been dropped from the event."""
    body: dict[str, Any] = {"job_id": update.job_id, "kind": update.kind, "data": update.data}
    if update.event is not None:
        fields = {f.name: getattr(update.event, f.name) for f in dataclasses.fields(update.event)}
        fields.pop("preview", None)
        body["event"] = {"type": type(update.event).__name__, "fields": fields}
    if update.preview_jpeg is not None:
        body["preview_jpeg"] = base64.b64encode(update.preview_jpeg).decode()
    return json.dumps(body, default=str).encode()


def decode(payload: bytes | str) -> JobUpdate:
    try:
        body = json.loads(payload)
        job_id, kind, data = body["job_id"], body["kind"], body["data"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadUpdate(f"not a job update: {exc}") from None
    if not isinstance(job_id, str) or kind not in KINDS or not isinstance(data, dict):
        raise BadUpdate("not a job update: wrong field types")
    status = data.get("status")
    if isinstance(status, str):  # listeners compare with JobStatus members, as in-process updates carry
        try:
            data["status"] = JobStatus(status)
        except ValueError:
            raise BadUpdate(f"unknown status {status!r}") from None
    preview = body.get("preview_jpeg")
    return JobUpdate(
        job_id,
        _kind(kind),
        data,
        event=_event(body["event"]) if body.get("event") is not None else None,
        preview_jpeg=base64.b64decode(preview) if isinstance(preview, str) else None,
    )


def _kind(kind: str) -> UpdateKind:
    if kind == "status":
        return "status"
    if kind == "progress":
        return "progress"
    if kind == "log":
        return "log"
    if kind == "preview":
        return "preview"
    return "event"


def _event(body: Any) -> events.Event:
    if not isinstance(body, dict) or body.get("type") not in EVENT_TYPES:
        raise BadUpdate("unknown executor event")
    fields = body.get("fields")
    if not isinstance(fields, dict):
        raise BadUpdate("executor event without fields")
    if body["type"] == "NodesCached":
        fields = {**fields, "nodes": tuple(fields.get("nodes", ()))}
    try:
        event: events.Event = EVENT_TYPES[body["type"]](**fields)
    except TypeError as exc:
        raise BadUpdate(f"executor event {body['type']}: {exc}") from None
    return event
