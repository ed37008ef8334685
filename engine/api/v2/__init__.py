"""Comfy API v2 (`/api/v2/...`), ComfyUI's official versioned HTTP API, per its OpenAPI specification.

Shared pieces live beside the routes: the error envelope (errors.py), who owns what a request touches
(auth.py), cursor pagination (pagination.py) and timestamps (render.py). The routes are registered before
the fal-style queue's catch-all `/{owner}/{app}...` routes, which would otherwise take some of these
paths.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.v2 import assets, jobs


def add_routes(app: web.Application) -> None:
    assets.add_routes(app)
    jobs.add_routes(app)
