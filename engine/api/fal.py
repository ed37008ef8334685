"""fal-style routes: the queue (`POST /{app}`, then `.../requests/{id}/status`, the result, cancel) and
the synchronous run (`POST /run/{app}`).

fal's clients address two hosts: the queue host (`queue.fal.run/{app}`) and the run host
(`fal.run/{app}`), whose answer is the result itself. Both use the same paths, so here the queue is
served at the base URL and the run host under `/run`: a client points its queue host at the base
URL and its run host at `{base}/run` (fal-client: FAL_QUEUE_RUN_HOST and FAL_RUN_HOST, see README).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from engine.api.auth import rate_limited
from engine.api.context import service
from engine.api.errors import ApiError, json_response
from engine.api.render import fal_result, fal_status, fal_submitted, fal_urls
from engine.api.sse import stream_job
from engine.api.submit import Webhook, find_endpoint, job_headers, own_job, submit
from engine.jobs.types import Job, LogLine

RUN_PREFIX = "/run"


def _app_id(request: web.Request) -> str:
    return f"{request.match_info['owner']}/{request.match_info['app']}"


def fal_headers(job: Job, created: bool = True) -> dict[str, str]:
    """fal names the request in `x-fal-request-id` on every answer about it; its Python client also
    takes a 502-504 carrying it for the app's own answer rather than a proxy's, and does not retry it."""
    return {**job_headers(job, created), "x-fal-request-id": job.id}


def _wants_logs(request: web.Request) -> bool:
    return request.query.get("logs", "").lower() in ("1", "true")


async def _job(request: web.Request) -> Job:
    job = await own_job(request, request.match_info["request_id"])
    if job.endpoint != _app_id(request):
        return await own_job(request, "")  # a request of another app is not found under this one
    return job


@rate_limited
async def submit_request(request: web.Request) -> web.Response:
    endpoint = find_endpoint(request, _app_id(request), "fal")
    url = request.query.get("fal_webhook")
    job, created = await submit(request, endpoint, Webhook(url, "fal_webhook") if url else None, "fal")
    position = await service(request).queue_position(job)
    return json_response(fal_submitted(job, position), headers=fal_headers(job, created))


@rate_limited
async def run_request(request: web.Request) -> web.Response:
    """fal's run host: the request goes through the same queue, and the answer waits for its result."""
    endpoint = find_endpoint(request, _app_id(request), "fal")
    job, created = await submit(request, endpoint, None, "fal")
    timeout = service(request).settings.sync_timeout_seconds
    finished = await service(request).wait(job.id, timeout)
    assert finished is not None
    headers = fal_headers(finished, created)
    if not finished.status.terminal:
        status_url = fal_urls(finished)["status_url"]
        raise ApiError(
            504,
            f"the result was not ready within {timeout:g}s; the request continues: poll {status_url}",
            headers=headers,
            detail=f"the result was not ready within {timeout:g}s",
            request_id=job.id,
            status_url=status_url,
        )
    body, status = fal_result(finished)
    return json_response(body, status=status, headers=headers)


async def request_status(request: web.Request) -> web.Response:
    job = await _job(request)
    engine = service(request)
    logs = await engine.logs(job.id) if _wants_logs(request) else None
    place = await engine.queue_place(job)
    body = fal_status(job, place.position, logs, place.eta_seconds)
    return json_response(body, status=200 if job.status.terminal else 202, headers=fal_headers(job))


async def request_status_stream(request: web.Request) -> web.StreamResponse:
    """Status bodies only, as fal's clients parse this stream; with `?logs=1` each carries the log
    lines that are new since the one before (fal's JS client appends them to those it has)."""
    job = await _job(request)
    engine = service(request)
    with_logs = _wants_logs(request)
    sent = 0

    async def render(current: Job) -> dict[str, Any]:
        nonlocal sent
        logs: list[LogLine] | None = None
        if with_logs:
            lines = await engine.logs(current.id)
            logs, sent = lines[sent:], len(lines)
        place = await engine.queue_place(current)
        return fal_status(current, place.position, logs, place.eta_seconds)

    return await stream_job(request, job, render, status_only=True, headers=fal_headers(job))


async def request_result(request: web.Request) -> web.Response:
    job = await _job(request)
    body, status = fal_result(job)
    return json_response(body, status=status, headers=fal_headers(job))


async def request_cancel(request: web.Request) -> web.Response:
    job = await _job(request)
    if job.status.terminal:
        return json_response({"status": "ALREADY_COMPLETED"}, status=400, headers=fal_headers(job))
    await service(request).cancel(job.id)
    return json_response({"status": "CANCELLATION_REQUESTED"}, status=202, headers=fal_headers(job))


def add_routes(app: web.Application) -> None:
    """Registered last: `/{owner}/{app}` would otherwise shadow other two-segment routes."""
    app.router.add_post(RUN_PREFIX + "/{owner}/{app}", run_request)
    app.router.add_post("/{owner}/{app}", submit_request)
    app.router.add_get("/{owner}/{app}/requests/{request_id}/status", request_status)
    app.router.add_get("/{owner}/{app}/requests/{request_id}/status/stream", request_status_stream)
    app.router.add_get("/{owner}/{app}/requests/{request_id}", request_result)
    app.router.add_put("/{owner}/{app}/requests/{request_id}/cancel", request_cancel)
