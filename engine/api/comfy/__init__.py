"""ComfyUI's own server API (the routes and websocket the official editor and ComfyUI clients use).

Every route is served twice, at `/path` and at `/api/path`, as ComfyUI does. The routes are registered
before the fal-style queue's `/{owner}/{app}`, which would otherwise match two-segment paths such as
`/api/prompt`.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.comfy import editor
from engine.api.errors import Handler

API_PREFIX = "/api"


def add_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Serve `handler` at `path` and at `/api` + `path`."""
    app.router.add_route(method, path, handler)
    app.router.add_route(method, API_PREFIX + path, handler)


def add_routes(app: web.Application) -> None:
    """Every ComfyUI route; each module below registers its own."""
    editor.add_routes(app)
