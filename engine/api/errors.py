"""JSON errors: every failure, ours or aiohttp's (404, 405, 413), answers with a body saying what is wrong.

Every JSON body the API writes goes through `json_response`, which writes strict JSON (RFC 8259): a NaN
or Infinity reaching a response is a bug to raise here, not a body that strict parsers refuse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine.jobs.store import StoreUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

STORE_RETRY_AFTER_SECONDS = 30

REASONS = {
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
}


def strict_dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=strict_dumps)  # noqa: TID251


class ApiError(Exception):
    """Raised by handlers; becomes `{"error": message, ...extra}` with the given status."""

    def __init__(
        self, status: int, message: str, /, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> web.Response:
        return json_response({"error": self.message, **self.extra}, status=self.status, headers=self.headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return exc.response()
    except StoreUnavailable as exc:
        log.error("%s %s: %s", request.method, request.path, exc)
        reason = "the server's storage is full" if exc.full else "the server's storage is failing"
        return ApiError(
            503,
            f"{reason}; retry later",
            headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
        ).response()
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = REASONS.get(exc.status, exc.reason.lower())
        if exc.status == 405:
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
            return ApiError(
                405, f"{request.method} is not allowed here; use {allowed}", headers={"Allow": allowed}
            ).response()
        if exc.status == 404:
            message = f"no such route: {request.method} {request.path}"
        return ApiError(exc.status, message).response()
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return ApiError(500, "internal server error; the server log has the details").response()
