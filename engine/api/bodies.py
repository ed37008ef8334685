"""Reading request bodies: JSON objects, or forms whose every value arrives as a string."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from engine.api.errors import ApiError

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")


async def read_fields(request: web.Request) -> tuple[dict[str, Any], bool]:
    """(values, strings): `strings` is True for forms, whose values must be parsed from text."""
    if request.content_type in FORM_TYPES:
        form = await request.post()
        values: dict[str, Any] = {}
        for name, value in form.items():
            if not isinstance(value, str):
                raise ApiError(400, f"field '{name}': file uploads are not accepted here", field=name)
            values.setdefault(name, value)
        return values, True
    raw = await request.read()
    if not raw.strip():
        return {}, False
    if request.content_type not in ("application/json", "application/octet-stream", "text/plain", ""):
        raise ApiError(415, f"unsupported content type {request.content_type}; send JSON or a form")
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object of parameters")
    return data, False
