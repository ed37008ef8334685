"""The official ComfyUI editor, with its workflow templates and node documentation, served from their
PyPI packages as ComfyUI serves them.

- `GET /`: the editor's index.html (`comfyui-frontend-package`, folder `static/`), and each of that
  folder's files at its own path (`/assets/index-B2rHQ9Sn.js`, `/scripts/api.js`, ...). The frontend
  shares `/extensions/` with custom nodes' web folders (`/extensions/{package}/...`), so there it
  claims only its own subfolders (`/extensions/core/...`).
- `GET /user.css`: an empty stylesheet. The editor's page links it ahead of the user's own stylesheet
  (`/api/userdata/user.css`, the operator's place for custom CSS); answering 404 would put an error
  in every browser console for a file there is no use for.
- `GET /templates/{file}`: the template browser's files (`index.json`, each template's graph and
  thumbnails), by the manifest of `comfyui-workflow-templates`, whose bundles put them in several
  packages.
- `GET /docs/{node}/{file}`: a node's documentation (`/docs/KSampler/en.md`, its images under
  `asset/`) from `comfyui-embedded-docs`. engine.api.docs registers `/docs`, `/docs/reference.js`
  and `/docs/assets/{name}` first, so they keep their meaning (no node is named `assets`).

The editor is a private route like the API it calls: with keys, a browser without a session is sent
to the sign-in page (engine.api.login), and its files answer 401. Every file is served by name from
a table made at start-up (engine.api.comfy.static_files): nothing outside the packages' own files
can be reached, whatever the request path.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from aiohttp import web

from engine.api.auth import page
from engine.api.comfy.static_files import REVALIDATE, StaticFiles, file_response, list_files
from engine.api.errors import ApiError, Handler

FRONTEND_PACKAGE = "comfyui_frontend_package"
DOCS_PACKAGE = "comfyui_embedded_docs"
TEMPLATES_PACKAGE = "comfyui_workflow_templates"
INDEX = "index.html"
SHARED_FOLDER = "extensions"
"""The frontend's folder whose URL space custom nodes share: claimed one subfolder at a time."""
INDEX_HEADERS = {"Content-Security-Policy": "frame-ancestors 'none'"}
"""The editor is never framed by another page (clickjacking a signed-in session)."""


def package_folder(package: str, folder: str) -> Path:
    """A folder inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the {package} package is not installed: pip install -e . installs it")
    return Path(next(iter(spec.submodule_search_locations))) / folder


@functools.cache
def template_files() -> dict[str, Path]:
    """Each workflow template file by its name, as the templates' manifest places them across bundles.

    A file whose bundle is not installed is left out (ComfyUI does the same), as is anything that is
    not a regular file."""
    import comfyui_workflow_templates as templates

    files: dict[str, Path] = {}
    for entry in templates.iter_templates():
        for asset in entry.assets:
            try:
                path = Path(templates.get_asset_path(entry.template_id, asset.filename))
            except FileNotFoundError:
                continue
            if "/" not in asset.filename and not path.is_symlink() and path.is_file():
                files[asset.filename] = path
    if not files:
        raise RuntimeError(f"the {TEMPLATES_PACKAGE} package lists no template files it has installed")
    return files


def _file_route(files: StaticFiles, relative_path: str) -> Handler:
    async def serve(_: web.Request) -> web.StreamResponse:
        return files.response(relative_path)

    return serve


def _folder_route(files: StaticFiles, folder: str) -> Handler:
    async def serve(request: web.Request) -> web.StreamResponse:
        return files.response(f"{folder}/{request.match_info['path']}")

    return serve


def add_routes(app: web.Application) -> None:
    """Lists the packages' files now, so a server without them fails at start rather than in the browser."""
    frontend = list_files(package_folder(FRONTEND_PACKAGE, "static"))
    docs = list_files(package_folder(DOCS_PACKAGE, "docs"))
    templates = template_files()
    if INDEX not in frontend.files:
        raise RuntimeError(f"{frontend.root} has no {INDEX}: the {FRONTEND_PACKAGE} install is broken")

    @page
    async def editor(_: web.Request) -> web.StreamResponse:
        response = frontend.response(INDEX, cache_control=REVALIDATE)
        response.headers.update(INDEX_HEADERS)
        return response

    async def user_css(_: web.Request) -> web.StreamResponse:
        return web.Response(
            text="",
            content_type="text/css",
            headers={"Cache-Control": REVALIDATE, "X-Content-Type-Options": "nosniff"},
        )

    async def template(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = templates.get(name)
        if path is None:
            raise ApiError(404, f"no such workflow template file: {name!r}")
        return file_response(name, path)

    async def node_doc(request: web.Request) -> web.StreamResponse:
        return docs.response(f"{request.match_info['node']}/{request.match_info['path']}")

    app.router.add_get("/", editor)
    top_files, top_folders = frontend.top_level()
    for name in sorted(top_files):
        app.router.add_get(f"/{name}", _file_route(frontend, name))
    for folder in sorted(top_folders - {SHARED_FOLDER}):
        app.router.add_get(f"/{folder}/{{path:.+}}", _folder_route(frontend, folder))
    shared = {
        parts[1]
        for parts in (name.split("/") for name in frontend.files)
        if len(parts) > 2 and parts[0] == SHARED_FOLDER
    }
    for subfolder in sorted(shared):
        prefix = f"{SHARED_FOLDER}/{subfolder}"
        app.router.add_get(f"/{prefix}/{{path:.+}}", _folder_route(frontend, prefix))
    app.router.add_get("/user.css", user_css)
    app.router.add_get("/templates/{name}", template)
    app.router.add_get("/docs/{node}/{path:.+}", node_doc)
