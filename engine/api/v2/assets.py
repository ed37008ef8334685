"""Comfy API v2 assets: upload, mint from a hash, check a hash, list, read, download, delete.

Every route is scoped to the caller (engine.api.v2.auth): another key's asset, or a blob only another
key holds, answers exactly as one that does not exist. Uploads stream to disk as they arrive and are
hashed on the way (engine.assets.library); the client's `expected_hash` is checked, never trusted.

Beyond the specification, `GET /api/v2/assets` lists the caller's assets, newest first, a page at a time
(`{"assets": [...], "next_cursor": ...}`), optionally only those with a tag; and each asset carries its
`tags`. The content URL is served by this server to the same credentials; it stays valid as long as the
asset, beyond the `url_expires_at` the specification asks for.

An asset lives until its `expires_at`: an upload's is `expires_in` seconds after it was made (no
`expires_in`: it does not expire); a job's output has its job's. Past it the asset is gone (404) and
the expiry loop deletes its record, and its blob if no other record names it. An asset a queued or
running job references cannot be deleted (409 `asset_in_use`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import BadHttpMessage

from engine.api.bodies import parse_json
from engine.api.context import base_url, service
from engine.api.errors import ApiError, json_response
from engine.api.ranges import file_response
from engine.api.v2.auth import owner
from engine.api.v2.errors import PREFIX, V2Error, invalid
from engine.api.v2.idempotency import single_use
from engine.api.v2.pagination import next_cursor, page, single
from engine.api.v2.render import timestamp
from engine.assets import mime
from engine.assets.library import AssetLibrary, Received, UploadTooLarge
from engine.assets.names import MAX_TAG_CHARS, MAX_TAGS, clean_file_path, clean_tags
from engine.assets.types import Asset, AssetInUse, format_hash, parse_hash

ASSETS = PREFIX + "/assets"
URL_LIFETIME_SECONDS = 3600
"""How long the `url` in a response is promised to work (it works as long as the asset does)."""
UPLOAD_CHUNK_BYTES = 64 * 1024
FIELD_MAX_BYTES = 4096
"""The most a text part of an upload may hold: the longest file_path or tag is far shorter."""
TEXT_FIELDS = ("content_type", "file_path", "expected_hash", "tags", "expires_in")
PART_HEADERS_BYTES = 1024
MULTIPART_OVERHEAD_BYTES = (len(TEXT_FIELDS) + MAX_TAGS + 1) * (FIELD_MAX_BYTES + PART_HEADERS_BYTES)
"""Room for the text parts (the most tags included), part headers and boundaries around the file in an
upload's declared length: a body longer than the file limit plus this cannot hold an acceptable file."""
MIN_EXPIRES_IN, MAX_EXPIRES_IN = 60, 604800
_DIGITS = re.compile(r"[0-9]{1,9}")


def library(request: web.Request) -> AssetLibrary:
    return service(request).assets


async def _expires_at(request: web.Request, asset: Asset) -> float | None:
    """An upload's own deadline; a job's output's is its job's (a job already gone: now)."""
    if asset.job_id is None:
        return asset.expires_at
    engine = service(request)
    job = await engine.job(asset.job_id)
    return engine.expires_at(job) if job is not None else time.time()


async def asset_json(
    request: web.Request, asset: Asset, *, created_new: bool | None = None
) -> dict[str, Any]:
    """The specification's Asset object (plus `tags`); `created_new` only on create responses."""
    expires_at = await _expires_at(request, asset)
    body: dict[str, Any] = {
        "id": asset.id,
        "hash": format_hash(asset.digest),
        "size_bytes": asset.size_bytes,
        "content_type": asset.content_type,
        "file_path": asset.file_path,
        "tags": list(asset.tags),
        "created_at": timestamp(asset.created_at),
        "url": f"{base_url(request)}{ASSETS}/{asset.id}/content",
        "url_expires_at": timestamp(time.time() + URL_LIFETIME_SECONDS),
        "expires_at": timestamp(expires_at) if expires_at is not None else None,
    }
    if asset.job_id is not None:
        body["job_id"] = asset.job_id
    if created_new is not None:
        body["created_new"] = created_new
    return body


def _not_found() -> V2Error:
    return V2Error(404, "not_found", "no such asset")


async def _own_asset(request: web.Request) -> Asset:
    asset = await library(request).get(owner(request), request.match_info["id"])
    if asset is None:
        raise _not_found()
    return asset


# -- upload ----------------------------------------------------------------------------------------------


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(UPLOAD_CHUNK_BYTES):
        yield chunk


async def _text(part: BodyPartReader, name: str) -> str:
    data = b""
    while chunk := await part.read_chunk(FIELD_MAX_BYTES):
        data += chunk
        if len(data) > FIELD_MAX_BYTES:
            raise invalid(422, name, f"field '{name}' is longer than {FIELD_MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(422, name, f"field '{name}' is not UTF-8 text") from exc


def _tag_values(part: BodyPartReader, text: str) -> list[object]:
    """Tags come as one part per tag, or as one JSON array part (Content-Type: application/json)."""
    if part.headers.get(hdrs.CONTENT_TYPE, "").startswith("application/json"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as exc:
            raise invalid(422, "tags", f"the tags part is not a JSON array: {exc}") from exc
        if not isinstance(values, list):
            raise invalid(422, "tags", "the tags part is JSON but not an array of strings")
        return values
    return [text]


class _Upload:
    """The parts of one upload request as they arrive."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.tags: list[object] = []
        self.received: Received | None = None

    async def read(self, request: web.Request, assets: AssetLibrary) -> None:
        try:
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if not isinstance(part, BodyPartReader):
                    raise invalid(
                        422, "file", "a part holds a nested multipart body; send one part per field"
                    )
                await self._part(part, assets)
        except (ValueError, BadHttpMessage) as exc:
            reason = exc.message if isinstance(exc, BadHttpMessage) else str(exc) or type(exc).__name__
            raise invalid(422, "body", f"the multipart body cannot be read ({reason})") from exc

    async def _part(self, part: BodyPartReader, assets: AssetLibrary) -> None:
        name = part.name or ""
        if name == "file":
            if self.received is not None:
                raise invalid(422, "file", "the upload has more than one file part; send one per request")
            self.received = await assets.receive(_chunks(part))
        elif name == "tags":
            self.tags.extend(_tag_values(part, await _text(part, name)))
            if len(self.tags) > MAX_TAGS:  # refused as they come: their number is the client's to choose
                raise invalid(422, "tags", f"more than {MAX_TAGS} tags given")
        elif name in TEXT_FIELDS:
            if name in self.fields:
                raise invalid(422, name, f"field '{name}' is given twice")
            self.fields[name] = await _text(part, name)
        else:
            known = ", ".join(("file", *TEXT_FIELDS))
            raise invalid(422, name or "body", f"unknown field {name[:60]!r}; the fields are {known}")


def _required(upload: _Upload, name: str) -> str:
    value = upload.fields.get(name)
    if value is None:
        raise invalid(422, name, f"field '{name}' is required")
    return value


def _expires_in(value: object) -> int | None:
    """The asset's lifetime in seconds within the specification's bounds: a JSON integer, or a form
    field's decimal digits. None: the default, which here is never to expire."""
    if value is None:
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        value = int(value)
    if type(value) is not int or not MIN_EXPIRES_IN <= value <= MAX_EXPIRES_IN:
        raise invalid(
            422, "expires_in", f"expires_in must be whole seconds from {MIN_EXPIRES_IN} to {MAX_EXPIRES_IN}"
        )
    return value


def _valid(field: str, check: Any, *args: Any) -> Any:
    try:
        return check(*args)
    except ValueError as exc:
        raise invalid(422, field, str(exc)) from exc


async def upload_asset(request: web.Request) -> web.Response:
    assets = library(request)
    if request.content_type != "multipart/form-data":
        raise invalid(
            422, "body", "send the upload as multipart/form-data with file, content_type and file_path"
        )
    declared = request.content_length
    if declared is not None and declared > assets.max_bytes + MULTIPART_OVERHEAD_BYTES:
        raise _too_large(assets.max_bytes)
    upload = _Upload()
    async with single_use(request, "assets.upload"):
        try:
            await upload.read(request, assets)
            asset, created_new = await _mint(request, assets, upload)
        except UploadTooLarge as exc:
            raise _too_large(exc.limit) from exc
        except BaseException:
            if upload.received is not None:
                await assets.discard(upload.received)
            raise
    return json_response(
        await asset_json(request, asset, created_new=created_new), status=201 if created_new else 200
    )


def _too_large(limit: int) -> V2Error:
    return V2Error(
        413,
        "payload_too_large",
        f"the file is larger than this server's limit of {limit} bytes",
        details={"limit_bytes": limit},
    )


async def _mint(request: web.Request, assets: AssetLibrary, upload: _Upload) -> tuple[Asset, bool]:
    received = upload.received
    if received is None:
        raise invalid(422, "file", "the upload has no file part (a part named 'file' holding the bytes)")
    content_type = _valid("content_type", mime.check, _required(upload, "content_type"), received.head)
    file_path = _valid("file_path", clean_file_path, _required(upload, "file_path"))
    tags = _valid("tags", clean_tags, upload.tags)
    expires_in = _expires_in(upload.fields.get("expires_in"))
    expected = upload.fields.get("expected_hash")
    if expected is not None:
        digest = parse_hash(expected.strip())
        if digest is None:
            raise invalid(422, "expected_hash", "expected_hash must be blake3:<64 hex digits>")
        if digest != received.digest:
            raise V2Error(
                409,
                "hash_mismatch",
                f"the bytes received hash to {format_hash(received.digest)}, not the expected_hash given",
                details={"expected_hash": format_hash(digest), "hash": format_hash(received.digest)},
            )
    return await assets.add_upload(
        owner(request),
        received,
        content_type=content_type,
        file_path=file_path,
        tags=tags,
        expires_in=expires_in,
    )


# -- minting from a hash ---------------------------------------------------------------------------------


async def _json_object(request: web.Request) -> dict[str, Any]:
    if request.content_type not in ("application/json", "application/octet-stream"):
        raise invalid(422, "body", "send a JSON object (Content-Type: application/json)")
    try:
        body = parse_json(await request.read())
    except ApiError as exc:
        raise invalid(422, "body", exc.message) from exc
    if not isinstance(body, dict):
        raise invalid(422, "body", "the body must be a JSON object")
    return body


async def asset_from_hash(request: web.Request) -> web.Response:
    body = await _json_object(request)
    unknown = sorted(set(body) - {"hash", "file_path", "tags", "expires_in"})
    if unknown:
        raise invalid(
            422,
            unknown[0],
            f"unknown field {unknown[0][:60]!r}; the fields are hash, file_path, tags, expires_in",
        )
    digest = parse_hash(body.get("hash"))
    if digest is None:
        raise invalid(422, "hash", "hash is required, written blake3:<64 hex digits>")
    file_path = body.get("file_path")
    if file_path is not None:
        if not isinstance(file_path, str):
            raise invalid(422, "file_path", "file_path must be a string")
        file_path = _valid("file_path", clean_file_path, file_path)
    tags = body.get("tags", [])
    if not isinstance(tags, list):
        raise invalid(422, "tags", "tags must be an array of strings")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, str):  # in JSON a number is a number
        raise invalid(
            422,
            "expires_in",
            f"expires_in must be a JSON integer from {MIN_EXPIRES_IN} to {MAX_EXPIRES_IN}, not a string",
        )
    minted = await library(request).add_from_hash(
        owner(request),
        digest,
        file_path=file_path,
        tags=_valid("tags", clean_tags, tags),
        expires_in=_expires_in(expires_in),
    )
    if minted is None:
        raise V2Error(404, "blob_not_found", f"no blob {format_hash(digest)} that you may mint from")
    asset, created = minted
    return json_response(await asset_json(request, asset, created_new=False), status=201 if created else 200)


async def head_by_hash(request: web.Request) -> web.Response:
    """200 if the caller may mint from the blob; 404 otherwise, a malformed hash included (no body)."""
    digest = parse_hash(request.match_info["hash"])
    if digest is None or not await library(request).can_use(owner(request), digest):
        return web.Response(status=404)
    return web.Response(status=200)


# -- reading and deleting -----------------------------------------------------------------------------


async def list_assets(request: web.Request) -> web.Response:
    wanted = page(request)
    tag = single(request, "tag")
    if tag is not None and not 0 < len(tag) <= MAX_TAG_CHARS:
        raise invalid(400, "tag", f"tag must be 1 to {MAX_TAG_CHARS} characters")
    found = await library(request).list(
        owner(request), limit=wanted.limit + 1, before_seq=wanted.after, tag=tag
    )
    shown = found[: wanted.limit]
    more = len(found) > wanted.limit
    return json_response(
        {
            "assets": [await asset_json(request, asset) for asset in shown],
            "next_cursor": next_cursor(shown[-1].seq) if more else None,
        }
    )


async def get_asset(request: web.Request) -> web.Response:
    return json_response(await asset_json(request, await _own_asset(request)))


async def delete_asset(request: web.Request) -> web.Response:
    try:
        deleted = await library(request).delete(owner(request), request.match_info["id"])
    except AssetInUse as exc:
        raise V2Error(
            409, "asset_in_use", "the asset cannot be deleted while something still depends on it"
        ) from exc
    if not deleted:
        raise _not_found()
    return web.Response(status=204)


def _attachment(file_path: str | None, asset_id: str) -> str:
    """RFC 6266: an ASCII fallback name and the exact one, percent-encoded."""
    name = (file_path or asset_id).rsplit("/", 1)[-1]
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def asset_content(request: web.Request) -> web.Response:
    """The bytes, whole or by range, always as application/octet-stream (as the specification
    declares), as an attachment: a stored upload is never rendered as a page of this origin."""
    asset = await _own_asset(request)
    headers = {
        hdrs.CONTENT_TYPE: "application/octet-stream",
        hdrs.CONTENT_DISPOSITION: _attachment(asset.file_path, asset.id),
        "X-Content-Type-Options": "nosniff",
        hdrs.CACHE_CONTROL: "private",
    }
    path = library(request).path(asset)
    return file_response(request, path, asset.size_bytes, f'"{asset.digest}"', headers)


def add_routes(app: web.Application) -> None:
    app.router.add_post(ASSETS, upload_asset)
    app.router.add_get(ASSETS, list_assets, allow_head=False)
    app.router.add_post(ASSETS + "/from-hash", asset_from_hash)
    app.router.add_route("HEAD", ASSETS + "/by-hash/{hash}", head_by_hash)
    app.router.add_get(ASSETS + "/{id}", get_asset, allow_head=False)
    app.router.add_delete(ASSETS + "/{id}", delete_asset)
    app.router.add_get(ASSETS + "/{id}/content", asset_content)
