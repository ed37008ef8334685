"""Whose resources a v2 request may touch.

Keys arrive as `Authorization: Bearer <key>` (the specification's scheme; engine.api.auth also accepts
x-api-key) and are checked by the shared auth middleware before a handler runs. Every v2 resource belongs
to the key that made it; another key's resource answers 404, exactly like one that does not exist, so
ids cannot be probed. With --open-access there are no keys and everything belongs to one anonymous owner.
"""

from __future__ import annotations

from aiohttp import web

from engine.api.context import api_key
from engine.assets.types import ANONYMOUS_OWNER


def owner(request: web.Request) -> str:
    key = api_key(request)
    return key.id if key is not None else ANONYMOUS_OWNER
