"""Service routes: health, readiness, metrics, the endpoint catalogue and OpenAPI (/docs: engine.api.docs)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.api.auth import public
from engine.api.context import base_url, service
from engine.api.errors import json_response
from engine.endpoints import build_openapi
from engine.jobs.worker import WorkerHealth


def _worker(health: WorkerHealth | None, runs_worker: bool = True) -> dict[str, Any]:
    if not runs_worker:
        return {"state": "none (API only: worker processes run the jobs)"}
    if health is None:
        return {"state": "starting"}
    if not health.alive:
        return {"state": "dead", "error": health.crashed}
    if health.store_error is not None:
        return {"state": "store failing", "error": health.store_error, "since": health.store_failing_since}
    job = health.running[0] if health.running else None
    return {"state": "running" if health.running else "idle", "job": job, "jobs": list(health.running)}


@public
async def health(request: web.Request) -> web.Response:
    """200 while the service can take and finish jobs; 503 when the worker has died or the store
    refuses its writes (a full disk), so a load balancer or supervisor stops sending it work."""
    engine = service(request)
    worker = engine.health()
    ok = worker is None or worker.ok
    body = {
        "status": "ok" if ok else "unhealthy",
        "uptime_seconds": round(time.time() - engine.started_at, 3),
        "test_weights": engine.test_weights,
        "worker": _worker(worker, engine.runs_worker),
    }
    return json_response(body, status=200 if ok else 503)


@public
async def ready(request: web.Request) -> web.Response:
    """503 until warm-up is over, then 200, even when some endpoints failed their warm-up; 503 again
    while the worker is dead or the store refuses its writes (no job could finish).

    A readiness probe decides whether the instance gets traffic at all. An endpoint that failed its
    warm-up answers 503 at once with the reason, as one whose model file is missing does, while the
    others serve; a 503 here would take every endpoint out of rotation for one bad file, and keep it out
    (the failure is not retried). So the body names the failed endpoints and why (`warmup_failed`) for
    monitoring to alert on, and the status says only whether the instance can take requests."""
    engine = service(request)
    readiness = engine.readiness
    worker = engine.health()
    ok = readiness.ready and (not engine.runs_worker or (worker is not None and worker.ok))
    body = {
        "ready": ok,
        "reason": readiness.reason if worker is None or worker.ok else f"worker {_worker(worker)['state']}",
        "warmup_seconds": readiness.warmup_seconds,
        "warmup_failed": readiness.warmup_failed,
    }
    return json_response(body, status=200 if ok else 503)


@public
async def metrics(request: web.Request) -> web.Response:
    engine = service(request)
    body = await engine.render_metrics()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@public
async def endpoints(request: web.Request) -> web.Response:
    engine = service(request)
    listing = [
        {
            "id": endpoint.id,
            "api": endpoint.apis[0],
            "apis": list(endpoint.apis),
            "title": endpoint.title,
            "description": endpoint.description,
            "published": endpoint.published,
            "available": (unavailable := engine.unavailable(endpoint)) is None,
            "unavailable_reason": unavailable,
            "schema": endpoint.json_schema(),
        }
        for endpoint in engine.endpoints.values()
    ]
    return json_response({"endpoints": listing})


@public
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_openapi(service(request).endpoints, base_url(request)))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/endpoints", endpoints)
    app.router.add_get("/openapi.json", openapi)
