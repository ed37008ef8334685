"""What a job looks like to each kind of client: Segmind's v2 bodies and fal's queue bodies.

Pure functions of a job (and where the client reached us), so the routes, the SSE stream and the
webhooks all show a job the same way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from engine.jobs.types import Job, JobStatus, LogLine

SEGMIND_FAILED_HTTP = 422
"""Segmind serves a FAILED request's status and result with HTTP 422, body still carrying the error."""


def file_url(job: Job, index: int) -> str:
    return f"{job.base_url}/files/{job.id}/{index}"


def segmind_urls(job: Job) -> dict[str, str]:
    return {
        "status_url": f"{job.base_url}/v2/requests/{job.id}/status",
        "response_url": f"{job.base_url}/v2/requests/{job.id}",
    }


def _segmind_status(job: Job) -> str:
    """Segmind has no cancelled state: a cancelled request reads as FAILED with its reason."""
    return JobStatus.FAILED if job.status == JobStatus.CANCELLED else job.status


def segmind_submitted(job: Job, queue_position: int | None) -> dict[str, Any]:
    return {
        "request_id": job.id,
        "status": _segmind_status(job),
        **segmind_urls(job),
        "queue_position": queue_position,
        "cost": job.cost,
    }


def segmind_status(
    job: Job, queue_position: int | None, eta_seconds: float | None = None
) -> tuple[dict[str, Any], int]:
    """`eta_seconds`, shown while queued: the expected seconds until the result (engine.jobs.durations)."""
    status = _segmind_status(job)
    body: dict[str, Any] = {"request_id": job.id, "status": status}
    if job.status == JobStatus.QUEUED:
        body["queue_position"] = queue_position
        body["eta_seconds"] = eta_seconds
    if job.status == JobStatus.PROCESSING and job.progress is not None:
        body["progress"] = {"value": job.progress[0], "max": job.progress[1]}
    if status == JobStatus.FAILED:
        body["error"] = job.error
        return body, SEGMIND_FAILED_HTTP
    return body, 200


def segmind_result(job: Job) -> tuple[dict[str, Any], int]:
    status = _segmind_status(job)
    body: dict[str, Any] = {"request_id": job.id, "status": status, "metrics": job.metrics, "cost": job.cost}
    if status == JobStatus.FAILED:
        body["error"] = job.error
        return body, SEGMIND_FAILED_HTTP
    if job.status != JobStatus.COMPLETED:
        return body, 202
    urls = [file_url(job, index) for index in range(len(job.outputs))]
    body["output"] = urls[0] if len(urls) == 1 else urls
    body["images"] = [
        {"url": url, "content_type": o.content_type, "width": o.width, "height": o.height, "size": o.size}
        for url, o in zip(urls, job.outputs, strict=True)
    ]
    body["seed"] = job.params.get("seed")
    return body, 200


# -- fal ---------------------------------------------------------------------------------------------------

FAL_STATUS = {
    JobStatus.QUEUED: "IN_QUEUE",
    JobStatus.PROCESSING: "IN_PROGRESS",
    JobStatus.COMPLETED: "COMPLETED",
    JobStatus.FAILED: "COMPLETED",
    JobStatus.CANCELLED: "COMPLETED",
}
"""fal reports a request that ended badly as COMPLETED; fetching its result then answers with the error."""


def fal_urls(job: Job) -> dict[str, str]:
    base = f"{job.base_url}/{job.endpoint}/requests/{job.id}"
    return {"status_url": f"{base}/status", "response_url": base, "cancel_url": f"{base}/cancel"}


def fal_submitted(job: Job, queue_position: int | None) -> dict[str, Any]:
    return {"request_id": job.id, **fal_urls(job), "queue_position": queue_position or 0}


def fal_log(line: LogLine) -> dict[str, Any]:
    """fal's log entry: an ISO 8601 UTC timestamp, as its queue serves them."""
    timestamp = datetime.fromtimestamp(line.timestamp, UTC).isoformat(timespec="milliseconds")
    return {"message": line.message, "timestamp": timestamp.replace("+00:00", "Z"), "level": "INFO"}


def fal_status(
    job: Job, queue_position: int | None, logs: list[LogLine] | None, eta_seconds: float | None = None
) -> dict[str, Any]:
    """`logs` is null unless they were asked for (`?logs=1`), as on fal: its Python client reads the
    key in every IN_PROGRESS and COMPLETED body, so it is never left out. `eta_seconds`, shown while
    queued beside fal's `queue_position`, is this server's own: the expected seconds until the result."""
    body: dict[str, Any] = {"status": FAL_STATUS[job.status], "request_id": job.id, **fal_urls(job)}
    if job.status == JobStatus.QUEUED:
        body["queue_position"] = queue_position or 0
        body["eta_seconds"] = eta_seconds
    body["logs"] = None if logs is None else [fal_log(line) for line in logs]
    if job.status.terminal:
        body["metrics"] = {"inference_time": job.metrics.get("inference_time")}
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        body["error"] = job.error
    return body


def fal_output(job: Job) -> dict[str, Any]:
    images = [
        {
            "url": file_url(job, index),
            "content_type": output.content_type,
            "file_name": output.filename,
            "file_size": output.size,
            "width": output.width,
            "height": output.height,
        }
        for index, output in enumerate(job.outputs)
    ]
    return {
        "images": images,
        "seed": job.params.get("seed"),
        "prompt": job.params.get("prompt", ""),
        "has_nsfw_concepts": [False] * len(images),
        "timings": {"inference": job.metrics.get("inference_time")},
    }


def fal_result(job: Job) -> tuple[dict[str, Any], int]:
    if job.status == JobStatus.COMPLETED:
        return fal_output(job), 200
    if job.status == JobStatus.CANCELLED:
        return {"detail": "Request was cancelled", "request_id": job.id}, 400
    if job.status == JobStatus.FAILED:
        return {"detail": job.error, "request_id": job.id}, 500
    return {
        "detail": "Request is still in progress",
        "status": FAL_STATUS[job.status],
        "request_id": job.id,
    }, 400


def fal_webhook(job: Job) -> dict[str, Any]:
    ok = job.status == JobStatus.COMPLETED
    return {
        "request_id": job.id,
        "gateway_request_id": job.id,
        "status": "OK" if ok else "ERROR",
        "payload": fal_output(job) if ok else None,
        "error": None if ok else job.error,
    }


def webhook_body(job: Job) -> dict[str, Any]:
    if job.api == "fal":
        return fal_webhook(job)
    return segmind_result(job)[0]
