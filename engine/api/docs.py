"""The documentation routes: the /docs page, its Swagger UI start-up script, and Swagger UI's own files.

Swagger UI's files come from the `swagger-ui-py` package and are served by this server, so the page
works offline. Only the files the page loads are served, by name from a fixed table: no request path
is ever joined to a directory, so no spelling of `..` can reach another file. The page carries a
Content-Security-Policy that allows scripts from this server only (template text reaches the page
through the OpenAPI descriptions, which Swagger UI renders as Markdown).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aiohttp import web

from engine.api.auth import public
from engine.api.context import base_url, service
from engine.api.errors import ApiError
from engine.endpoints import render_docs_page
from engine.endpoints.docs_page import REFERENCE_SCRIPT

SWAGGER_UI_PACKAGE = "swagger_ui"
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
}
"""Swagger UI's files that /docs loads (and its licence), with their content types."""
CACHE = "public, max-age=86400"


def swagger_ui_directory() -> Path:
    """The package's static folder, found without importing the package (which would import Jinja)."""
    spec = importlib.util.find_spec(SWAGGER_UI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is not installed: pip install -e . installs it")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def content_security_policy(server_url: str) -> str:
    """Scripts and styles from this server only; requests (try it out) to it and to its public URL.

    Styles may be inline (the page's own and Swagger UI's); images may be data: URIs (Swagger UI's
    icons) and blob: URLs (an image answered to a try-it-out request)."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        f"img-src 'self' data: blob:; connect-src 'self' {server_url}; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


@public
async def docs(request: web.Request) -> web.Response:
    server_url = base_url(request)
    return web.Response(
        text=render_docs_page(service(request).endpoints, server_url=server_url),
        content_type="text/html",
        headers={
            "Content-Security-Policy": content_security_policy(server_url),
            "X-Content-Type-Options": "nosniff",
        },
    )


@public
async def reference_script(_: web.Request) -> web.Response:
    return web.Response(
        text=REFERENCE_SCRIPT,
        content_type="text/javascript",
        headers={"Cache-Control": CACHE, "X-Content-Type-Options": "nosniff"},
    )


def add_routes(app: web.Application) -> None:
    """Finds Swagger UI's files now, so a server without them fails at start rather than at /docs."""
    directory = swagger_ui_directory()

    @public
    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        content_type = ASSETS.get(name)
        if content_type is None:
            raise ApiError(404, f"no such documentation file; served here: {', '.join(ASSETS)}")
        headers = {"Content-Type": content_type, "Cache-Control": CACHE, "X-Content-Type-Options": "nosniff"}
        return web.FileResponse(directory / name, headers=headers)

    app.router.add_get("/docs", docs)
    app.router.add_get("/docs/reference.js", reference_script)
    app.router.add_get("/docs/assets/{name}", asset)
