"""Turning an HTTP request into a queued job: find the endpoint, parse its fields, submit, and the
lookups that follow (a job is visible only to the key that created it)."""

from __future__ import annotations

from typing import NamedTuple

from aiohttp import web

from engine.api.bodies import read_fields
from engine.api.context import api_key, base_url, service
from engine.api.errors import ApiError
from engine.endpoints import Endpoint, RequestError
from engine.endpoints.spec import Api
from engine.jobs.types import InsufficientCredits, Job
from engine.jobs.webhook_targets import WebhookTargetError, check_target

MAX_IDEMPOTENCY_KEY = 255


class Webhook(NamedTuple):
    url: str
    field: str
    """The query parameter or header it came in, named in errors."""


def find_endpoint(request: web.Request, endpoint_id: str, api: Api) -> Endpoint:
    engine = service(request)
    endpoint = engine.endpoints.get(endpoint_id)
    if endpoint is None or api not in endpoint.apis:
        raise ApiError(404, f"no endpoint named '{endpoint_id}'", endpoint=endpoint_id)
    unavailable = engine.unavailable(endpoint)
    if unavailable is not None:
        raise ApiError(503, f"endpoint '{endpoint_id}' is unavailable: {unavailable}", endpoint=endpoint_id)
    return endpoint


async def submit(
    request: web.Request, endpoint: Endpoint, webhook: Webhook | None, api: Api
) -> tuple[Job, bool]:
    """Parse the body against the endpoint and queue a job called through `api`'s routes; (job, created)."""
    values, strings = await read_fields(request)
    try:
        params = endpoint.parse(values, strings=strings)
    except RequestError as exc:
        if api == "fal":  # fal's clients expect FastAPI-style 422 validation errors
            raise ApiError(422, str(exc), **exc.fal_body()) from exc
        raise ApiError(400, str(exc), errors=exc.body()["errors"]) from exc
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise ApiError(
            400, f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters", field="Idempotency-Key"
        )
    if webhook is not None:
        await _check_webhook(request, api, webhook)
    try:
        return await service(request).submit(
            endpoint,
            params,
            api=api,
            key=api_key(request),
            idempotency_key=idempotency_key,
            webhook_url=webhook.url if webhook is not None else None,
            base_url=base_url(request),
        )
    except InsufficientCredits as exc:
        raise ApiError(406, str(exc), required=exc.needed, available=exc.available) from exc


async def _check_webhook(request: web.Request, api: Api, webhook: Webhook) -> None:
    """Refuse at submit a URL the server would refuse to call, naming the parameter it came in."""
    try:
        await check_target(webhook.url, allow_private=service(request).settings.allow_private_webhooks)
    except WebhookTargetError as exc:
        if api == "fal":  # FastAPI's validation shape, as for fal's body fields
            detail = [{"loc": ["query", webhook.field], "msg": str(exc), "type": "value_error"}]
            raise ApiError(422, str(exc), detail=detail) from exc
        raise ApiError(400, str(exc), field=webhook.field) from exc


async def own_job(request: web.Request, job_id: str) -> Job:
    """The job, if the caller may see it; others' jobs are indistinguishable from missing ones."""
    job = await service(request).job(job_id)
    key = api_key(request)
    if job is None or (key is not None and job.key_id != key.id):
        raise ApiError(404, f"no request '{job_id}' (unknown, or expired after the retention period)")
    return job


def job_headers(job: Job, created: bool = True) -> dict[str, str]:
    headers = {"x-request-id": job.id, "x-request-cost": f"{job.cost:g}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return headers
