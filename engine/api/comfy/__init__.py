"""ComfyUI's own server API (the routes and websocket the official editor and ComfyUI clients use).

Every route is served twice, at `/path` and at `/api/path`, as ComfyUI does. The routes are registered
before the fal-style queue's `/{owner}/{app}`, which would otherwise match two-segment paths such as
`/api/prompt`.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.errors import Handler

API_PREFIX = "/api"
COMFYUI_VERSION = "0.8.0"
"""The ComfyUI release whose server contract these routes follow (reported in /system_stats)."""


def add_route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Serve `handler` at `path` and at `/api` + `path`."""
    app.router.add_route(method, path, handler)
    app.router.add_route(method, API_PREFIX + path, handler)


def add_routes(app: web.Application) -> None:
    """Every ComfyUI route; each module below registers its own."""
    # Imported here, not at the top: each module imports `add_route` from this package.
    from engine.api.comfy import (
        editor,
        extensions,
        files,
        first_run,
        history,
        info,
        jobs,
        prompt,
        queue,
        userdata,
        ws,
    )

    for module in (editor, prompt, queue, history, jobs, ws, files, userdata, info, extensions, first_run):
        module.add_routes(app)
