"""The aiohttp application: middlewares, routes, and the service's start and stop."""

from __future__ import annotations

from aiohttp import web

from engine.api import admin, comfy, docs, fal, login, meta, segmind
from engine.api.auth import auth_middleware, notice_middleware
from engine.api.context import BASE_URL, SERVICE, SESSIONS
from engine.api.errors import error_middleware
from engine.api.origin import origin_middleware
from engine.api.render import webhook_body
from engine.api.sessions import SECRET_FILE, Sessions
from engine.api.v2 import add_routes as add_v2_routes
from engine.api.v2.errors import envelope_middleware
from engine.jobs.webhooks import load_or_create_secret
from engine.service import Service


def create_app(service: Service, listen_url: str) -> web.Application:
    """The application for a server listening at `listen_url` (see engine.api.listen)."""
    app = web.Application(
        middlewares=[
            notice_middleware,
            error_middleware,
            envelope_middleware,
            origin_middleware,
            auth_middleware,
        ],
        client_max_size=service.settings.max_body_bytes,
    )
    app[SERVICE] = service
    app[BASE_URL] = (service.settings.public_url or listen_url).rstrip("/")
    app[SESSIONS] = Sessions(load_or_create_secret(service.settings.data_path / SECRET_FILE).encode())
    meta.add_routes(app)
    docs.add_routes(app)  # before comfy: its /docs/{node}/{file} would take /docs/assets/{name}
    login.add_routes(app)
    admin.add_routes(app)  # before Segmind's: its /v1/{owner}/{app} would take /v1/admin/endpoints
    segmind.add_routes(app)
    comfy.add_routes(app)  # before fal: its /{owner}/{app} would take /api/prompt
    add_v2_routes(app)  # before fal too: /{owner}/{app}/requests/{id} has the shape of some v2 paths
    fal.add_routes(app)

    async def start(_: web.Application) -> None:
        await service.start(render_webhook=webhook_body)

    async def stop(_: web.Application) -> None:
        await service.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    return app
