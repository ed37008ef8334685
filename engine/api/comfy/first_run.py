"""The graph the editor opens with on a browser's first visit: one that runs on this server's models.

The editor's built-in default graph names model files of its own choosing (and a text encoder type the
engine does not run), so a first run would fail. The project's editor extension (web/first_run.js) asks
this route once per browser for the shipped endpoint graph to show instead, laid out as an editor
workflow (engine.endpoints.sharing), and remembers that it did, so a user's own work is never replaced.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.comfy import add_route
from engine.api.context import service
from engine.api.errors import ApiError, json_response

PREFERRED = ("flux-schnell", "flux-dev", "aura-flow")
"""Fastest first: schnell makes a good image in 4 steps."""


async def first_run_workflow(request: web.Request) -> web.Response:
    engine = service(request)
    available = [name for name, endpoint in engine.endpoints.items() if engine.unavailable(endpoint) is None]
    choice = next((name for name in PREFERRED if name in available), available[0] if available else None)
    if choice is None:
        raise ApiError(404, "no endpoint of this server has its models installed: there is no graph to show")
    return json_response(await engine.export(choice))


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/engine/first_run_workflow", first_run_workflow)
