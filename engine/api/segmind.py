"""Segmind-style routes: `POST /v1/{endpoint}` (image bytes), `POST /v2/{endpoint}` and its polling URLs.

Clients written for Segmind (its Python SDK, its JS samples sending forms) work by changing the base
URL: same paths, statuses, codes (FAILED served as 422), and field names. An endpoint served in both
styles has a fal app id, owner/app, which these routes serve as `/v1/{owner}/{app}` (Segmind's SDK puts
the slug into the path as it is).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from aiohttp import web

from engine.api.auth import public, rate_limited
from engine.api.context import service
from engine.api.errors import ApiError, json_response
from engine.api.render import segmind_result, segmind_status, segmind_submitted
from engine.api.sse import stream_job
from engine.api.submit import Webhook, find_endpoint, job_headers, own_job, submit
from engine.jobs.types import Job, JobStatus, OutputFile


def _endpoint_id(request: web.Request) -> str:
    """`/v1/{endpoint}` or `/v1/{owner}/{app}`."""
    match = request.match_info
    return match["endpoint"] if "endpoint" in match else f"{match['owner']}/{match['app']}"


def _webhook(request: web.Request) -> Webhook | None:
    if request.query.get("webhook"):
        return Webhook(request.query["webhook"], "webhook")
    if request.headers.get("x-webhook-url"):
        return Webhook(request.headers["x-webhook-url"], "x-webhook-url")
    return None


@rate_limited
async def run_sync(request: web.Request) -> web.StreamResponse:
    """Blocks until the image is ready and answers with its bytes (JSON with base64 for several)."""
    endpoint = find_endpoint(request, _endpoint_id(request), "segmind")
    job, created = await submit(request, endpoint, _webhook(request), "segmind")
    timeout = service(request).settings.sync_timeout_seconds
    finished = await service(request).wait(job.id, timeout)
    assert finished is not None
    headers = job_headers(finished, created)
    if not finished.status.terminal:
        raise ApiError(
            504,
            f"the image was not ready within {timeout:g}s; the request continues: poll its status_url",
            headers=headers,
            request_id=job.id,
            status_url=f"{job.base_url}/v2/requests/{job.id}/status",
        )
    if finished.status != JobStatus.COMPLETED:
        raise ApiError(500, finished.error or "the request failed", headers=headers, request_id=job.id)
    headers["x-seed"] = str(finished.params.get("seed"))
    headers["x-inference-time"] = f"{finished.metrics.get('inference_time', 0):g}"
    headers["x-queue-time"] = f"{finished.metrics.get('queue_time', 0):g}"
    return _image_response(request, finished, headers)


def _image_response(request: web.Request, job: Job, headers: dict[str, str]) -> web.Response:
    paths = [_file(request, output) for output in job.outputs]
    if len(paths) == 1:
        return web.Response(
            body=paths[0].read_bytes(), content_type=job.outputs[0].content_type, headers=headers
        )
    images = [
        {
            "content_type": output.content_type,
            "width": output.width,
            "height": output.height,
            "data": base64.b64encode(path.read_bytes()).decode(),
        }
        for output, path in zip(job.outputs, paths, strict=True)
    ]
    return json_response({"images": images, "seed": job.params.get("seed")}, headers=headers)


@rate_limited
async def submit_async(request: web.Request) -> web.Response:
    endpoint = find_endpoint(request, _endpoint_id(request), "segmind")
    job, created = await submit(request, endpoint, _webhook(request), "segmind")
    position = await service(request).queue_position(job)
    return json_response(segmind_submitted(job, position), headers=job_headers(job, created))


async def request_status(request: web.Request) -> web.Response:
    job = await own_job(request, request.match_info["request_id"])
    place = await service(request).queue_place(job)
    body, status = segmind_status(job, place.position, place.eta_seconds)
    return json_response(body, status=status, headers=job_headers(job))


async def request_result(request: web.Request) -> web.Response:
    job = await own_job(request, request.match_info["request_id"])
    body, status = segmind_result(job)
    return json_response(body, status=status, headers=job_headers(job))


async def request_cancel(request: web.Request) -> web.Response:
    job = await own_job(request, request.match_info["request_id"])
    if job.status.terminal:
        raise ApiError(409, f"request '{job.id}' already finished ({job.status})", status=job.status)
    cancelled = await service(request).cancel(job.id) or job
    return json_response({"request_id": job.id, "status": cancelled.status, "cancel_requested": True})


async def request_events(request: web.Request) -> web.StreamResponse:
    job = await own_job(request, request.match_info["request_id"])

    async def render(current: Job) -> dict[str, Any]:
        return segmind_status(current, None)[0]

    return await stream_job(request, job, render)


@public
async def output_file(request: web.Request) -> web.StreamResponse:
    """Images by URL: the unguessable request id is the credential, and the file goes when the job expires.

    The index is the output's position as the result lists it, in ASCII digits and nothing else
    (int() would also take "-1", "0_0" or Arabic-Indic digits), and the file must be a plain file in
    the output folder: a link there is never followed, wherever it points.
    """
    job = await service(request).job(request.match_info["request_id"])
    text = request.match_info["index"]
    index = int(text) if text.isascii() and text.isdigit() and text == str(int(text)) else None
    if job is None or index is None or index >= len(job.outputs):
        raise ApiError(404, "no such file (unknown request, or expired after the retention period)")
    output = job.outputs[index]
    headers = {"Content-Type": output.content_type, "Cache-Control": "private, max-age=3600"}
    return web.FileResponse(_file(request, output), headers=headers)


def _file(request: web.Request, output: OutputFile) -> Path:
    path = service(request).output_path(output)
    if path is None:
        raise ApiError(404, "no such file (unknown request, or expired after the retention period)")
    return path


def add_routes(app: web.Application) -> None:
    """Registered after the admin routes: `/v1/{owner}/{app}` would take `/v1/admin/endpoints`."""
    app.router.add_post("/v1/{endpoint}", run_sync)
    app.router.add_post("/v2/{endpoint}", submit_async)
    app.router.add_post("/v1/{owner}/{app}", run_sync)
    app.router.add_post("/v2/{owner}/{app}", submit_async)
    app.router.add_get("/v2/requests/{request_id}/status", request_status)
    app.router.add_get("/v2/requests/{request_id}/events", request_events)
    app.router.add_post("/v2/requests/{request_id}/cancel", request_cancel)
    app.router.add_get("/v2/requests/{request_id}", request_result)
    app.router.add_get("/files/{request_id}/{index}", output_file)
