"""Reading what ComfyUI clients send: JSON bodies, lists of prompt ids, integer query parameters.

ComfyUI itself answers a malformed body with a 500 and a traceback; here every such body is a 400 that
names the field and what it must be.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from engine.api.bodies import parse_json
from engine.api.errors import ApiError

MAX_IDS = 1000
"""Prompt ids one request may name (a queue or history delete, a batch cancel)."""
MAX_QUERY_INT = 2**31 - 1


async def json_object(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The body as a JSON object; an empty body is {} unless `required`."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(400, "the body must be a JSON object")
        return {}
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def flag(body: dict[str, Any], name: str) -> bool:
    """An optional true/false field (absent or null: false)."""
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"'{name}' must be true or false", field=name)
    return value


def id_list(body: dict[str, Any], name: str) -> list[str]:
    """An optional list of prompt ids (absent or null: none)."""
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ApiError(400, f"'{name}' must be a list of prompt ids (strings)", field=name)
    if len(value) > MAX_IDS:
        raise ApiError(400, f"'{name}' may list at most {MAX_IDS} prompt ids", field=name)
    return value


def is_canonical_uuid(value: object) -> bool:
    """A UUID written as ComfyUI requires a job id: lowercase and hyphenated."""
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def query_int(request: web.Request, name: str, *, minimum: int, maximum: int = MAX_QUERY_INT) -> int | None:
    """An optional integer query parameter within [minimum, maximum], in ASCII digits."""
    text = request.query.get(name)
    if text is None:
        return None
    digits = text.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()) or len(digits) > len(str(MAX_QUERY_INT)):
        raise ApiError(400, f"'{name}' must be an integer, got {text[:40]!r}", field=name)
    value = int(text)
    if not minimum <= value <= maximum:
        raise ApiError(400, f"'{name}' must be between {minimum} and {maximum}, got {value}", field=name)
    return value
