"""Comfy API v2's `Idempotency-Key`: single-use per owner and operation, reject-on-duplicate.

The first request presenting a key claims it; any later one (a retry, a concurrent duplicate, another
body) is refused with 422 `idempotency_key_reuse` and never runs. A request refused for what the client
sent (any v2 4xx) created nothing, so it releases the key and a corrected retry may use it. Any other
failure leaves the outcome unknown, so the key stays claimed: the client looks for what may have been
created instead of creating it twice. Keys expire 24 hours after their claim.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from engine.api.context import service
from engine.api.v2.auth import owner
from engine.api.v2.errors import V2Error, invalid

HEADER = "Idempotency-Key"
LIFETIME_SECONDS = 24 * 3600
_KEY = re.compile(r"[\x21-\x7e]{1,255}")


@asynccontextmanager
async def single_use(request: web.Request, scope: str) -> AsyncIterator[None]:
    """Run the block under the request's Idempotency-Key for `scope` (an operation), if it sent one."""
    values = request.headers.getall(HEADER, [])
    if not values:
        yield
        return
    key = values[0].strip()
    if len(values) > 1 or not _KEY.fullmatch(key):
        raise invalid(400, HEADER, f"{HEADER} must be one value of 1 to 255 visible ASCII characters")
    store = service(request).store
    caller = owner(request)
    if not await store.claim_idempotency_key(caller, scope, key, time.time(), LIFETIME_SECONDS):
        raise V2Error(
            422,
            "idempotency_key_reuse",
            f"{HEADER} {key[:80]!r} was already used for this operation; keys are single-use",
        )
    try:
        yield
    except V2Error as exc:
        if exc.status < 500:
            await store.release_idempotency_key(caller, scope, key)
        raise
