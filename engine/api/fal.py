"""fal-style queue routes: `POST /{app}`, then `.../requests/{id}/status`, the result, and cancel.

Clients written for fal's queue (`Authorization: Key ...`, IN_QUEUE / IN_PROGRESS / COMPLETED with
queue position and logs) work by pointing their queue host at this server.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api.auth import rate_limited
from engine.api.context import service
from engine.api.errors import json_response
from engine.api.render import fal_result, fal_status, fal_submitted
from engine.api.sse import stream_job
from engine.api.submit import Webhook, find_endpoint, job_headers, own_job, submit
from engine.jobs.types import Job


def _app_id(request: web.Request) -> str:
    return f"{request.match_info['owner']}/{request.match_info['app']}"


async def _job(request: web.Request) -> Job:
    job = await own_job(request, request.match_info["request_id"])
    if job.endpoint != _app_id(request):
        return await own_job(request, "")  # a request of another app is not found under this one
    return job


@rate_limited
async def submit_request(request: web.Request) -> web.Response:
    endpoint = find_endpoint(request, _app_id(request), "fal")
    url = request.query.get("fal_webhook")
    job, created = await submit(request, endpoint, Webhook(url, "fal_webhook") if url else None)
    position = await service(request).queue_position(job)
    return json_response(fal_submitted(job, position), headers=job_headers(job, created))


async def request_status(request: web.Request) -> web.Response:
    job = await _job(request)
    engine = service(request)
    logs = await engine.logs(job.id) if request.query.get("logs") in ("1", "true") else None
    body = fal_status(job, await engine.queue_position(job), logs)
    return json_response(body, status=200 if job.status.terminal else 202, headers=job_headers(job))


async def request_status_stream(request: web.Request) -> web.StreamResponse:
    job = await _job(request)
    engine = service(request)

    async def render(current: Job) -> dict[str, Any]:
        return fal_status(current, await engine.queue_position(current), None)

    return await stream_job(request, job, render)


async def request_result(request: web.Request) -> web.Response:
    job = await _job(request)
    body, status = fal_result(job)
    return json_response(body, status=status, headers=job_headers(job))


async def request_cancel(request: web.Request) -> web.Response:
    job = await _job(request)
    if job.status.terminal:
        return json_response({"status": "ALREADY_COMPLETED"}, status=400)
    await service(request).cancel(job.id)
    return json_response({"status": "CANCELLATION_REQUESTED"}, status=202)


def add_routes(app: web.Application) -> None:
    """Registered last: `/{owner}/{app}` would otherwise shadow other two-segment routes."""
    app.router.add_post("/{owner}/{app}", submit_request)
    app.router.add_get("/{owner}/{app}/requests/{request_id}/status", request_status)
    app.router.add_get("/{owner}/{app}/requests/{request_id}/status/stream", request_status_stream)
    app.router.add_get("/{owner}/{app}/requests/{request_id}", request_result)
    app.router.add_put("/{owner}/{app}/requests/{request_id}/cancel", request_cancel)
