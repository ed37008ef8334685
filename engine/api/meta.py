"""Service routes: health, readiness, metrics, the endpoint catalogue, OpenAPI and the docs page."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.api.auth import public
from engine.api.context import base_url, service
from engine.api.errors import json_response
from engine.endpoints import build_openapi, render_docs_page


@public
async def health(request: web.Request) -> web.Response:
    engine = service(request)
    return json_response(
        {
            "status": "ok",
            "uptime_seconds": round(time.time() - engine.started_at, 3),
            "test_weights": engine.test_weights,
        }
    )


@public
async def ready(request: web.Request) -> web.Response:
    readiness = service(request).readiness
    body = {"ready": readiness.ready, "reason": readiness.reason, "warmup_seconds": readiness.warmup_seconds}
    return json_response(body, status=200 if readiness.ready else 503)


@public
async def metrics(request: web.Request) -> web.Response:
    body = service(request).metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


@public
async def endpoints(request: web.Request) -> web.Response:
    listing = [
        {
            "id": endpoint.id,
            "api": endpoint.api,
            "title": endpoint.title,
            "description": endpoint.description,
            "available": endpoint.unavailable is None,
            "unavailable_reason": endpoint.unavailable,
            "schema": endpoint.json_schema(),
        }
        for endpoint in service(request).endpoints.values()
    ]
    return json_response({"endpoints": listing})


@public
async def openapi(request: web.Request) -> web.Response:
    return json_response(build_openapi(service(request).endpoints, base_url(request)))


@public
async def docs(request: web.Request) -> web.Response:
    return web.Response(text=render_docs_page(service(request).endpoints), content_type="text/html")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/v1/endpoints", endpoints)
    app.router.add_get("/openapi.json", openapi)
    app.router.add_get("/docs", docs)
