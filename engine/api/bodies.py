"""Reading request bodies: JSON objects, or forms whose every value arrives as a string.

A body a client got wrong answers 400 saying what is wrong with it, never 500: aiohttp's own form
reader raises bare ValueErrors (or decodes leniently) on a malformed multipart body, so forms are read
here part by part; JSON is read with hooks that keep numbers no float or int conversion can hold, so
the field they were meant for can refuse them by its bound.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import BadHttpMessage

from engine.api.errors import ApiError
from engine.endpoints.fields import is_unicode_text

JSON_TYPES = ("application/json", "application/octet-stream", "text/plain", "")
PLAIN_TRANSFER_ENCODINGS = frozenset({"7bit", "8bit", "binary"})
"""Content-Transfer-Encoding values that leave a part's bytes as they are (RFC 7578 deprecates the
header; browsers and HTTP libraries never send another)."""


async def read_fields(request: web.Request) -> tuple[dict[str, Any], bool]:
    """(values, strings): `strings` is True for forms, whose values must be parsed from text."""
    if request.content_type == "multipart/form-data":
        return await _read_multipart(request), True
    raw = await request.read()
    if request.content_type == "application/x-www-form-urlencoded" and not _looks_like_json(raw):
        return _read_urlencoded(raw, request.charset or "utf-8"), True
    if not raw.strip():
        return {}, False
    if request.content_type not in (*JSON_TYPES, "application/x-www-form-urlencoded"):
        raise ApiError(415, f"unsupported content type {request.content_type}; send JSON or a form")
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object of parameters")
    return data, False


def _looks_like_json(raw: bytes) -> bool:
    """A JSON object sent with a form's content type: what `curl -d '{...}'` sends unless told otherwise.
    No form field's name starts with a brace, so reading such a body as a form would turn the whole
    object into one unknown field and silently run the job on defaults; it is read as JSON instead."""
    return raw.lstrip().startswith(b"{")


def parse_json(raw: bytes) -> Any:
    """The JSON value of a body. A number beyond what int and float convert (over 4,300 digits, or
    beyond float range such as 1e400) arrives as an exact Decimal, for `Field` to refuse by its bound."""
    try:
        return json.loads(raw, parse_int=_json_int, parse_float=_json_float)
    except RecursionError as exc:
        raise ApiError(
            400, "the body nests arrays or objects too deeply to read; send an object of plain values"
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from exc


def _json_int(text: str) -> int | Decimal:
    try:
        return int(text)
    except ValueError:  # more digits than Python converts from a string (sys.get_int_max_str_digits)
        return Decimal(text)


def _json_float(text: str) -> float | Decimal:
    value = float(text)
    return value if math.isfinite(value) else Decimal(text)


def _read_urlencoded(raw: bytes, charset: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(raw.decode(charset), keep_blank_values=True, encoding=charset, errors="strict")
    except LookupError as exc:
        raise ApiError(400, f"the form's charset {charset!r} is not an encoding this server knows") from exc
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, f"the form is not valid {charset} text: {exc.reason} at byte {exc.start}"
        ) from exc
    values: dict[str, str] = {}
    for name, value in pairs:
        values.setdefault(name, value)
    return values


async def _read_multipart(request: web.Request) -> dict[str, str]:
    values: dict[str, str] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ApiError(400, "a form part holds a nested multipart body; send one text part per field")
            name, value = await _read_part(part)
            values.setdefault(name, value)
    except (ValueError, BadHttpMessage) as exc:
        reason = exc.message if isinstance(exc, BadHttpMessage) else str(exc)
        raise ApiError(
            400,
            f"the multipart body cannot be read ({reason}): Content-Type must name a boundary B, each part "
            "start with a --B line and a Content-Disposition header, and the body end with --B--",
        ) from exc
    return values


async def _read_part(part: BodyPartReader) -> tuple[str, str]:
    name = part.name
    if not name:
        raise ApiError(
            400, 'a form part has no name: each part needs Content-Disposition: form-data; name="..."'
        )
    if not is_unicode_text(name):
        raise ApiError(400, f"a form part's name is not valid UTF-8 text: {name!a}")
    content_type = part.headers.get(hdrs.CONTENT_TYPE)
    if part.filename is not None or (content_type is not None and not content_type.startswith("text/")):
        raise ApiError(400, f"field '{name}': file uploads are not accepted here", field=name)
    content_encoding = part.headers.get(hdrs.CONTENT_ENCODING, "identity").lower()
    transfer_encoding = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "binary").lower()
    if content_encoding != "identity" or transfer_encoding not in PLAIN_TRANSFER_ENCODINGS:
        raise ApiError(
            400,
            f"field '{name}': send the value as plain text, "
            "without Content-Encoding or Content-Transfer-Encoding",
            field=name,
        )
    data = await part.read()
    charset = part.get_charset(default="utf-8")
    try:
        return name, data.decode(charset)
    except LookupError as exc:
        raise ApiError(
            400, f"field '{name}': charset {charset!r} is not an encoding this server knows", field=name
        ) from exc
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, f"field '{name}' is not valid {charset} text: {exc.reason} at byte {exc.start}", field=name
        ) from exc
