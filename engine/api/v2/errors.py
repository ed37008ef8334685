"""Comfy API v2's error envelope: `{"error": {"code", "message", "details"}}` on every failure under
/api/v2, whoever raised it.

Handlers raise `V2Error` with one of the specification's machine-readable codes. Failures raised
before a handler runs (a missing key from engine.api.auth, a rate limit, an unknown route, a body over
aiohttp's size limit) and unexpected ones arrive here in the project's own form and are rewritten by
`envelope_middleware`, so a v2 client never has to parse two shapes. An unexpected failure answers with
the specification's generic `upstream_error` and leaves the detail to the server log.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from engine.api.context import SERVICE
from engine.api.errors import ApiError, Handler, json_response
from engine.jobs.store import StoreUnavailable

log = logging.getLogger(__name__)

PREFIX = "/api/v2"
STORE_RETRY_AFTER_SECONDS = 30

CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "insufficient_credits",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "upstream_error",
}
"""The code for a failure raised without one (by the shared middlewares or aiohttp), by status."""


def envelope(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


class V2Error(ApiError):
    """A v2 failure: an HTTP status, the specification's code, a message a user can act on, and
    optional machine-readable details (such as which field was wrong)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        /,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.code = code
        self.details = details

    def response(self) -> web.Response:
        body = envelope(self.code, self.message, self.details)
        return json_response(body, status=self.status, headers=self.headers)


def invalid(status: int, field: str, message: str) -> V2Error:
    """A request that names a bad field: 400 for the query, path and headers, 422 for the body (the
    specification's validation failure)."""
    return V2Error(status, CODES[status], message, details={"field": field})


def _rewritten(exc: ApiError) -> V2Error:
    if isinstance(exc, V2Error):
        return exc
    details = dict(exc.extra) or None
    return V2Error(
        exc.status, CODES.get(exc.status, "error"), exc.message, details=details, headers=exc.headers
    )


def is_v2(request: web.Request) -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


@web.middleware
async def envelope_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_v2(request):
        return await handler(request)
    try:
        return await handler(request)
    except ApiError as exc:
        return _rewritten(exc).response()
    except StoreUnavailable as exc:
        log.error("%s %s: %s", request.method, request.path, exc)
        return V2Error(
            500,
            "upstream_error",
            "the server's storage is unavailable; retry later",
            headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
        ).response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 405:
            allowed = ", ".join(sorted(getattr(exc, "allowed_methods", ()) or ()))
            message = f"{request.method} is not allowed here; use {allowed}"
            return V2Error(405, CODES[405], message, headers={"Allow": allowed}).response()
        if exc.status == 404:
            return V2Error(404, "not_found", f"no such route: {request.method} {request.path}").response()
        if exc.status == 413:
            limit = request.app[SERVICE].settings.max_body_bytes
            message = f"the request body is larger than this server's limit of {limit} bytes"
            return V2Error(413, CODES[413], message).response()
        return V2Error(exc.status, CODES.get(exc.status, "error"), exc.reason).response()
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return V2Error(
            500, "upstream_error", "internal server error; the server log has the details"
        ).response()
