"""Front-end extensions: `/extensions` lists the editor's scripts, `/extensions/<name>/...` serves them.

Each custom node package with a `WEB_DIRECTORY` (engine.graph.registry) is an extension folder under its
package name; so is the project's own `web/` folder, as `engine`. Other modules may add folders with
`add_extension_directory` (the editor's static files add its `core` scripts this way). A file is served
only from inside its folder: `paths.path_in` refuses `..`, absolute names and links leading out.
"""

from __future__ import annotations

import logging
import mimetypes
import os
from pathlib import Path
from urllib.parse import quote

from aiohttp import hdrs, web

from engine.api.comfy import add_route
from engine.api.comfy.paths import path_in
from engine.api.context import SERVICE
from engine.api.errors import ApiError, json_response

log = logging.getLogger(__name__)

EXTENSION_DIRECTORIES = web.AppKey("comfy_extension_directories", dict[str, Path])
ENGINE_EXTENSION = "engine"
ENGINE_WEB_DIRECTORY = Path(__file__).resolve().parents[3] / "web"
"""The project's own editor extensions, beside the `engine` package."""
SCRIPT_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css"}


def add_extension_directory(app: web.Application, name: str, directory: Path) -> None:
    """Serve `directory` at `/extensions/<name>/` and list its scripts in `/extensions`."""
    directories = app.setdefault(EXTENSION_DIRECTORIES, {})
    if name in directories:
        log.warning("extension folder %s is already %s; %s is not served", name, directories[name], directory)
        return
    directories[name] = directory.resolve()


def _scripts(name: str, directory: Path) -> list[str]:
    """URLs of the `.js` files below `directory` (not through links that lead out of it)."""
    urls = []
    for current, subdirectories, files in os.walk(directory):
        subdirectories.sort()
        for filename in sorted(files):
            path = Path(current) / filename
            if path.suffix == ".js" and _inside(path, directory):
                relative = path.relative_to(directory).as_posix()
                urls.append(f"/extensions/{quote(name, safe='')}/{quote(relative)}")
    return urls


def _inside(path: Path, directory: Path) -> bool:
    try:
        return path.resolve().is_relative_to(directory)
    except (OSError, RuntimeError):  # a link loop
        return False


async def list_extensions(request: web.Request) -> web.Response:
    directories = request.app.get(EXTENSION_DIRECTORIES, {})
    urls: list[str] = []
    for name, directory in directories.items():
        urls.extend(_scripts(name, directory))
    return json_response(urls)


async def extension_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info["package"]
    directory = request.app.get(EXTENSION_DIRECTORIES, {}).get(name)
    if directory is None:
        raise ApiError(404, f"no extension is called {name!r}", field="package")
    path = path_in(directory, request.match_info["path"], "path")
    if not path.is_file():
        raise ApiError(404, f"extension {name!r} has no file {request.match_info['path']!r}", field="path")
    content_type = SCRIPT_TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
    headers = {"X-Content-Type-Options": "nosniff"}
    if content_type:
        headers[hdrs.CONTENT_TYPE] = content_type
    return web.FileResponse(path, headers=headers)


def add_routes(app: web.Application) -> None:
    if ENGINE_WEB_DIRECTORY.is_dir():
        add_extension_directory(app, ENGINE_EXTENSION, ENGINE_WEB_DIRECTORY)
    for name, directory in app[SERVICE].registry.web_directories.items():
        add_extension_directory(app, name, directory)
    add_route(app, "GET", "/extensions", list_extensions)
    app.router.add_get("/extensions/{package}/{path:.+}", extension_file)
