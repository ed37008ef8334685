"""Cursor pagination for v2 listings: `limit` and an opaque `cursor` from the previous page.

A cursor is the position after the last item of a page, so pages stay stable while items are added
(new ones come before the first page) or deleted. Bad values answer 400 naming the parameter and its
bounds; a parameter given twice is refused rather than one copy picked.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import web

from engine.api.v2.errors import invalid

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
_DIGITS = re.compile(r"[0-9]{1,9}")


@dataclass(frozen=True)
class Page:
    limit: int
    after: int | None
    """The cursor's position; None for the first page."""


def single(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise invalid(400, name, f"query parameter '{name}' is given {len(values)} times; give it once")
    return values[0] if values else None


def page(request: web.Request) -> Page:
    limit_text = single(request, "limit")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        if not _DIGITS.fullmatch(limit_text) or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise invalid(
                400, "limit", f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit_text[:40]!r}"
            )
        limit = int(limit_text)
    cursor = single(request, "cursor")
    after = None
    if cursor is not None:
        if not _DIGITS.fullmatch(cursor):
            raise invalid(400, "cursor", "cursor is not one this server gave: pass next_cursor back as it is")
        after = int(cursor)
    return Page(limit, after)


def next_cursor(position: int) -> str:
    return str(position)
