"""Admin routes: publishing endpoints live, and sharing them as one file.

    POST   /v1/admin/endpoints                   publish (engine.endpoints.publish: the declaration)
                                                 ?dry_run=true: check as publishing does, write nothing
    DELETE /v1/admin/endpoints/{name}             unpublish
    GET    /v1/admin/endpoints/{name}/export      the endpoint as one editor workflow file
    POST   /v1/admin/endpoints/import             publish such a file (?name= to rename, ?replace=true,
                                                 ?dry_run=true)

A name may be owner/app, so each route also takes two segments. Every route needs an admin key (or an
--open-access server, bound to localhost). A published endpoint is served at once: the catalogue,
/openapi.json and /docs are computed from the service's endpoints on each request. A dry run is what
the editor's "Publish as endpoint" (web/publish_endpoint.js) shows before publishing: the request schema
the server's own declaration code makes, or the problem it finds.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from engine.api.auth import admin_only
from engine.api.context import base_url, service
from engine.api.errors import ApiError, json_response
from engine.endpoints import Endpoint
from engine.endpoints.publish import ProblemKind, PublishError, check_name

STATUS: dict[ProblemKind, int] = {"invalid": 400, "not_found": 404, "conflict": 409, "cannot_run": 422}
"""A declaration that is wrong is 400; one this server cannot run (a node type or model file it lacks) 422."""
PREFIX = "/v1/admin/endpoints"
FLAGS = {"true": True, "1": True, "false": False, "0": False}


def _name(request: web.Request) -> str:
    match = request.match_info
    name = match["name"] if "name" in match else f"{match['owner']}/{match['app']}"
    try:
        return check_name(name)
    except PublishError as exc:
        raise ApiError(400, str(exc), field="name") from exc


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is too large for a double")
    return value


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} is not JSON (RFC 8259 has no NaN or Infinity)")


async def _json_body(request: web.Request) -> Any:
    """The body as strict JSON: no NaN or Infinity, no number beyond what a template can hold."""
    if request.content_type not in ("application/json", "application/octet-stream", ""):
        raise ApiError(415, f"unsupported content type {request.content_type}; send JSON")
    raw = await request.read()
    try:
        return json.loads(raw, parse_float=_finite, parse_constant=_no_constant)
    except RecursionError as exc:
        raise ApiError(400, "the body nests arrays or objects too deeply to read") from exc
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from exc


def _flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name, "false").lower()
    if text not in FLAGS:
        raise ApiError(400, f"{name} must be true or false", field=name)
    return FLAGS[text]


def _problem(exc: PublishError) -> ApiError:
    return ApiError(STATUS[exc.kind], str(exc))


def summary(endpoint: Endpoint, server_url: str, unavailable: str | None) -> dict[str, Any]:
    """What a client needs to call a newly published endpoint; `unavailable`: `Service.unavailable`'s."""
    urls: dict[str, list[str]] = {}
    if "segmind" in endpoint.apis:
        urls["segmind"] = [f"{server_url}/v1/{endpoint.id}", f"{server_url}/v2/{endpoint.id}"]
    if "fal" in endpoint.apis:
        urls["fal"] = [f"{server_url}/{endpoint.id}", f"{server_url}/run/{endpoint.id}"]
    return {
        "id": endpoint.id,
        "apis": list(endpoint.apis),
        "title": endpoint.title,
        "published": endpoint.published,
        "available": unavailable is None,
        "urls": urls,
        "schema": endpoint.json_schema(),
    }


def _published(request: web.Request, endpoint: Endpoint, replaced: bool, dry_run: bool) -> web.Response:
    """201 for a new endpoint, 200 for a replaced one; a dry run is 200 and says so."""
    shown = summary(endpoint, base_url(request), service(request).unavailable(endpoint))
    body = {"endpoint": shown, "replaced": replaced, "dry_run": dry_run}
    return json_response(body, status=200 if replaced or dry_run else 201)


@admin_only
async def publish(request: web.Request) -> web.Response:
    dry_run = _flag(request, "dry_run")
    declaration = await _json_body(request)
    try:
        endpoint, replaced = await service(request).publish(declaration, dry_run=dry_run)
    except PublishError as exc:
        raise _problem(exc) from exc
    return _published(request, endpoint, replaced, dry_run)


@admin_only
async def unpublish(request: web.Request) -> web.Response:
    try:
        endpoint = await service(request).unpublish(_name(request))
    except PublishError as exc:
        raise _problem(exc) from exc
    return json_response({"deleted": endpoint.id})


@admin_only
async def export(request: web.Request) -> web.Response:
    name = _name(request)
    try:
        workflow = await service(request).export(name)
    except PublishError as exc:
        raise _problem(exc) from exc
    filename = name.replace("/", "--") + ".json"
    return json_response(workflow, headers={"Content-Disposition": f'attachment; filename="{filename}"'})


@admin_only
async def import_shared(request: web.Request) -> web.Response:
    replace, dry_run = _flag(request, "replace"), _flag(request, "dry_run")
    name = request.query.get("name")
    if name is not None:
        try:
            check_name(name)
        except PublishError as exc:
            raise ApiError(400, str(exc), field="name") from exc
    data = await _json_body(request)
    try:
        endpoint, replaced = await service(request).import_shared(
            data, name=name, replace=replace, dry_run=dry_run
        )
    except PublishError as exc:
        raise _problem(exc) from exc
    return _published(request, endpoint, replaced, dry_run)


def add_routes(app: web.Application) -> None:
    """Registered before Segmind's routes, whose /v1/{owner}/{app} would take /v1/admin/endpoints."""
    app.router.add_post(PREFIX, publish)
    app.router.add_post(f"{PREFIX}/import", import_shared)
    app.router.add_delete(PREFIX + "/{name}", unpublish)
    app.router.add_delete(PREFIX + "/{owner}/{app}", unpublish)
    app.router.add_get(PREFIX + "/{name}/export", export)
    app.router.add_get(PREFIX + "/{owner}/{app}/export", export)
