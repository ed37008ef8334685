"""ComfyUI's file routes: `/view` (a file of the input, output or temp folder) and the image uploads.

The uploads are read part by part with their own bound (`Settings.max_upload_bytes`, announced in
`/features` as ComfyUI does), not the API's JSON body bound, and every file is decoded with Pillow before
it is written: only images of a few formats and a bounded pixel count are kept. An upload is written
under a name of its own ("name (1).png") unless the client asks to overwrite, and an identical file
already there is reused, as ComfyUI does.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import BadHttpMessage

from engine import folders
from engine.api.comfy import add_route, images
from engine.api.comfy.paths import check_name, folder_in, path_in
from engine.api.context import service
from engine.api.errors import ApiError, json_response
from engine.endpoints.fields import is_unicode_text

IMAGE_FIELD = "image"
MAX_TEXT_FIELD_BYTES = 64 * 1024
"""Bound of an upload's text fields (type, subfolder, overwrite, original_ref)."""
MULTIPART_OVERHEAD_BYTES = 64 * 1024
"""Room for part headers and text fields beside the file, when the Content-Length is checked up front."""
CHUNK_BYTES = 64 * 1024
PLAIN_TRANSFER_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
DEFAULT_PREVIEW_QUALITY = 90

INLINE_TYPES = ("image/", "video/", "audio/")
"""Types a browser shows without running anything; any other file is sent as a download, so that a
`.html` or `.svg` file in a folder cannot run script in the API's origin."""
SCRIPTED_IMAGE_TYPES = ("image/svg+xml",)


@dataclass
class UploadForm:
    filename: str
    data: bytes
    fields: dict[str, str] = field(default_factory=dict)


def _limit_error(limit: int) -> ApiError:
    return ApiError(
        413,
        f"the upload is larger than this server's limit of {limit / 2**20:g} MiB ({limit} bytes)",
        limit_bytes=limit,
    )


async def read_upload(request: web.Request, limit: int) -> UploadForm:
    """The multipart form of an upload: its `image` file (at most `limit` bytes) and its text fields."""
    if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD_BYTES:
        raise _limit_error(limit)
    if request.content_type != "multipart/form-data":
        raise ApiError(415, "send the upload as multipart/form-data with the file in the 'image' field")
    filename: str | None = None
    data = b""
    fields: dict[str, str] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "a form part holds a nested multipart body")
            name = part.name or ""
            _check_plain(part, name)
            if name == IMAGE_FIELD:
                if filename is not None:
                    raise ApiError(400, "image: send one file per upload", field=IMAGE_FIELD)
                if not part.filename:
                    raise ApiError(400, "image: the part must be a file with a file name", field=IMAGE_FIELD)
                filename = part.filename
                data = await _read_part(part, limit, _limit_error(limit))
            elif name and name not in fields:
                value = await _read_part(
                    part,
                    MAX_TEXT_FIELD_BYTES,
                    ApiError(400, f"{name}: longer than {MAX_TEXT_FIELD_BYTES} bytes", field=name),
                )
                try:
                    fields[name] = value.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ApiError(400, f"{name}: not valid UTF-8 text", field=name) from exc
            else:
                await part.release()
    except (ValueError, BadHttpMessage) as exc:
        reason = exc.message if isinstance(exc, BadHttpMessage) else str(exc)
        raise ApiError(400, f"the multipart body cannot be read: {reason}") from exc
    if filename is None:
        raise ApiError(400, "image: the form has no 'image' file", field=IMAGE_FIELD)
    return UploadForm(filename, data, fields)


def _check_plain(part: BodyPartReader, name: str) -> None:
    """Parts are taken as sent: an encoded or compressed one would be a second, unbounded decoding."""
    if not is_unicode_text(name):
        raise ApiError(400, f"a form part's name is not valid UTF-8 text: {name!a}")
    content_encoding = part.headers.get(hdrs.CONTENT_ENCODING, "identity").lower()
    transfer_encoding = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "binary").lower()
    if content_encoding != "identity" or transfer_encoding not in PLAIN_TRANSFER_ENCODINGS:
        raise ApiError(
            400, f"{name}: send the part as it is, without Content-Encoding or Content-Transfer-Encoding"
        )


async def _read_part(part: BodyPartReader, limit: int, too_large: ApiError) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while chunk := await part.read_chunk(CHUNK_BYTES):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _directory(type_name: str, field_name: str) -> Path:
    directory = folders.get_directory_by_type(type_name)
    if directory is None:
        raise ApiError(
            400,
            f"{field_name}: {type_name!r} is not one of {', '.join(folders.USER_DIRECTORY_TYPES)}",
            field=field_name,
        )
    return directory


def _switch(value: str | None, field_name: str) -> bool:
    if value is None or value.lower() in ("", "false", "0"):
        return False
    if value.lower() in ("true", "1"):
        return True
    raise ApiError(400, f"{field_name}: {value!r} is not true or false", field=field_name)


def _file_name(filename: str) -> str:
    """An upload's file name: one plain name (folders go in `subfolder`) with an image's extension."""
    check_name(filename, IMAGE_FIELD)
    try:
        relative = folders.relative_name(filename)
    except folders.PathEscapeError as exc:
        raise ApiError(400, f"image: {exc}", field=IMAGE_FIELD) from exc
    if len(relative.parts) != 1 or relative.name != filename:
        raise ApiError(
            400,
            f"image: the file name {filename!r} must be a plain name; put folders in 'subfolder'",
            field=IMAGE_FIELD,
        )
    if Path(filename).suffix.lower() not in images.EXTENSIONS:
        raise ApiError(
            400,
            f"image: {filename!r} must end in an image extension ({', '.join(images.EXTENSIONS)})",
            field=IMAGE_FIELD,
        )
    return filename


def store(folder: Path, filename: str, data: bytes, *, overwrite: bool) -> str:
    """Write `data` as `filename` in `folder` and return the name used: unless `overwrite`, a name taken
    by another file becomes "name (1).ext", "name (2).ext", ..., and a file with the same bytes is
    reused instead of written again."""
    folder.mkdir(parents=True, exist_ok=True)
    stem, extension = os.path.splitext(filename)
    target = folder / filename
    number = 1
    while not overwrite and os.path.lexists(target):
        if not target.is_symlink() and target.is_file() and _same_bytes(target, data):
            return target.name
        target = folder / f"{stem} ({number}){extension}"
        number += 1
    if target.is_dir() and not target.is_symlink():
        raise ApiError(409, f"image: {target.name!r} is a folder", field=IMAGE_FIELD)
    folders.write_atomically(target, data)
    return target.name


def _same_bytes(path: Path, data: bytes) -> bool:
    return path.stat().st_size == len(data) and path.read_bytes() == data


async def _upload(request: web.Request, *, mask: bool) -> web.Response:
    settings = service(request).settings
    form = await read_upload(request, settings.max_upload_bytes)
    filename = _file_name(form.filename)
    type_name = form.fields.get("type") or "input"
    directory = _directory(type_name, "type")
    subfolder = form.fields.get("subfolder", "")
    folder = folder_in(directory, subfolder, "subfolder")
    path_in(directory, f"{subfolder}/{filename}" if subfolder else filename, IMAGE_FIELD)
    overwrite = _switch(form.fields.get("overwrite"), "overwrite")
    try:
        if mask:
            original = _original(form.fields.get("original_ref"))
            data = await asyncio.to_thread(images.apply_mask, original, form.data, settings.max_upload_pixels)
        else:
            data = form.data
            await asyncio.to_thread(images.check_image, data, settings.max_upload_pixels)
    except images.ImageRefused as exc:
        raise ApiError(400, f"image: {exc}", field=IMAGE_FIELD) from exc
    try:
        name = await asyncio.to_thread(store, folder, filename, data, overwrite=overwrite)
    except OSError as exc:
        raise ApiError(409, f"image: cannot write {filename!r} here: {exc.strerror or exc}") from exc
    return json_response({"name": name, "subfolder": subfolder, "type": type_name})


def _original(reference: str | None) -> Path:
    """The file `original_ref` names: `{"filename", "subfolder"?, "type"?}` (type `output` by default, a
    'name.png [input]' annotation wins), as the editor's mask editor sends it."""
    if reference is None:
        raise ApiError(400, "original_ref: the mask upload needs the original image's reference")
    try:
        ref = json.loads(reference)
    except ValueError as exc:
        raise ApiError(400, f"original_ref: not valid JSON: {exc}", field="original_ref") from exc
    if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
        raise ApiError(400, 'original_ref: expected {"filename": ..., "subfolder": ..., "type": ...}')
    subfolder, type_name = ref.get("subfolder", ""), ref.get("type") or "output"
    if not isinstance(subfolder, str) or not isinstance(type_name, str):
        raise ApiError(400, "original_ref: subfolder and type must be strings", field="original_ref")
    filename, annotated = folders.annotated_filepath(ref["filename"])
    directory = annotated or _directory(type_name, "original_ref.type")
    path = path_in(directory, f"{subfolder}/{filename}" if subfolder else filename, "original_ref")
    if not path.is_file():
        raise ApiError(404, f"original_ref: {ref['filename']!r} is not in the {type_name} folder")
    return path


async def upload_image(request: web.Request) -> web.Response:
    return await _upload(request, mask=False)


async def upload_mask(request: web.Request) -> web.Response:
    return await _upload(request, mask=True)


def content_disposition(kind: str, filename: str) -> str:
    """`kind` (inline or attachment) with the file name, ASCII and RFC 5987 forms, safe in a header."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _preview_format(value: str, channel: str) -> tuple[str, int]:
    """ComfyUI's `preview=format;quality`: webp unless jpeg is asked for and no channel with alpha
    (`a`, `rgba`) is named."""
    parts = value.split(";")
    image_format = parts[0] if parts[0] in images.PREVIEW_FORMATS and "a" not in channel else "webp"
    quality = DEFAULT_PREVIEW_QUALITY
    if len(parts) > 1 and parts[-1]:
        if not parts[-1].isdecimal() or not 1 <= int(parts[-1]) <= 100:
            raise ApiError(400, f"preview: quality {parts[-1]!r} must be 1 to 100", field="preview")
        quality = int(parts[-1])
    return image_format, quality


async def view(request: web.Request) -> web.StreamResponse:
    """A file of the input, output or temp folder, optionally as a preview or one of its channels."""
    query = request.query
    if "filename" not in query:
        raise ApiError(400, "filename: the file to view is required", field="filename")
    filename, annotated = folders.annotated_filepath(query["filename"])
    if not filename:
        raise ApiError(400, "filename: the file to view is required", field="filename")
    type_name = query.get("type") or "output"
    directory = annotated or _directory(type_name, "type")
    subfolder = query.get("subfolder", "")
    folder_in(directory, subfolder, "subfolder")
    path = path_in(directory, f"{subfolder}/{filename}" if subfolder else filename, "filename")
    if not path.is_file():
        raise ApiError(404, f"{query['filename']!r} is not in the {type_name} folder")
    channel = query.get("channel", "")
    if channel and channel not in images.CHANNELS:
        raise ApiError(400, f"channel: {channel!r} is not one of {', '.join(images.CHANNELS)}")
    max_pixels = service(request).settings.max_upload_pixels
    name = path.name
    try:
        if "preview" in query:
            image_format, quality = _preview_format(query["preview"], channel)
            body = await asyncio.to_thread(images.preview, path, image_format, quality, channel, max_pixels)
            return _image_response(body, f"image/{image_format}", name)
        if channel in ("rgb", "a"):
            body = await asyncio.to_thread(images.channel_png, path, channel, max_pixels)
            return _image_response(body, "image/png", name)
    except images.ImageRefused as exc:
        raise ApiError(400, f"filename: {exc}", field="filename") from exc
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    inline = content_type.startswith(INLINE_TYPES) and content_type not in SCRIPTED_IMAGE_TYPES
    headers = {
        hdrs.CONTENT_TYPE: content_type if inline else "application/octet-stream",
        hdrs.CONTENT_DISPOSITION: content_disposition("inline" if inline else "attachment", name),
        "X-Content-Type-Options": "nosniff",
    }
    return web.FileResponse(path, headers=headers)


def _image_response(body: bytes, content_type: str, name: str) -> web.Response:
    return web.Response(
        body=body,
        headers={
            hdrs.CONTENT_TYPE: content_type,
            hdrs.CONTENT_DISPOSITION: content_disposition("inline", name),
            "X-Content-Type-Options": "nosniff",
        },
    )


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/view", view)
    add_route(app, "POST", "/upload/image", upload_image)
    add_route(app, "POST", "/upload/mask", upload_mask)
