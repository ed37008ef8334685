"""Who is calling: API keys from `x-api-key` or `Authorization: Key ...`, or the session cookie of a
browser signed in with a key (engine.api.login); per-key rate limits.

Keys are required unless the operator starts the server with `--open-access` (which also binds it
to localhost only). The mode is fixed at start-up: having no keys, or revoking the last one, closes
the API rather than opening it. Routes are private unless their handler is marked `@public`
(health, docs, output files, which are reached through unguessable URLs). A private route marked
`@page` is one a person opens in a browser (the editor): without a session it sends the browser to
the sign-in page instead of answering 401.

A session stands for its key: each request looks the key up again, so a revoked key's sessions stop
at once. Cookies ride along on requests other sites start, which is what engine.api.origin refuses.

Routes marked `@admin_only` (publishing endpoints) need a key made with `engine keys add NAME
--admin`; with open access the operator on localhost is the admin.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from aiohttp import web

from engine.api.context import API_KEY, SERVICE, SESSIONS
from engine.api.errors import ApiError, Handler
from engine.api.rate_limit import retry_after_header
from engine.api.sessions import COOKIE
from engine.jobs.types import ApiKey
from engine.service import Service

F = TypeVar("F", bound=Callable[..., object])

LOGIN_PATH = "/login"


def public(handler: F) -> F:
    """No API key needed for this route."""
    handler.engine_public = True  # type: ignore[attr-defined]
    return handler


def page(handler: F) -> F:
    """A page a person opens in a browser: without a key or session, it redirects to sign-in."""
    handler.engine_page = True  # type: ignore[attr-defined]
    return handler


def admin_only(handler: F) -> F:
    """Only an admin key (or the operator of an --open-access server) may call this route."""
    handler.engine_admin_only = True  # type: ignore[attr-defined]
    return handler


def rate_limited(handler: F) -> F:
    """Each call spends one of the key's per-minute requests (used on submissions, not on polling)."""
    handler.engine_rate_limited = True  # type: ignore[attr-defined]
    return handler


def presented_secret(request: web.Request) -> str | None:
    secret = request.headers.get("x-api-key")
    if secret:
        return secret.strip()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() in ("key", "bearer") and value.strip():
        return value.strip()
    return None


async def no_keys_hint(service: Service) -> str:
    """What the operator of a server with no live keys can do (looked up only when refusing a request)."""
    if await service.has_keys():
        return ""
    return (
        "; this server has no API keys yet: its operator creates one with `engine keys add NAME`, or "
        "restarts it with `engine serve --open-access` (localhost only, no keys)"
    )


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    route_handler = request.match_info.handler
    service = request.app[SERVICE]
    if getattr(route_handler, "engine_public", False) or service.settings.open_access:
        request[API_KEY] = None
        return await handler(request)
    key = await _caller(request, service)
    if getattr(route_handler, "engine_admin_only", False) and not key.admin:
        raise ApiError(
            403,
            f"key {key.id} is not an admin key: managing endpoints needs one "
            "(`engine keys add NAME --admin`)",
        )
    if getattr(route_handler, "engine_rate_limited", False):
        wait = await service.store.rate_limit(key.id, key.rate_per_minute)
        if wait > 0:
            raise ApiError(
                429,
                f"rate limit of {key.rate_per_minute} requests per minute exceeded; retry in {wait:.1f}s",
                headers={"Retry-After": retry_after_header(wait)},
                retry_after=round(wait, 3),
            )
    request[API_KEY] = key
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response()
    current = await service.key(key.id)
    if current is not None and not response.prepared:
        response.headers["x-remaining-credits"] = f"{current.available:g}"
    return response


async def _caller(request: web.Request, service: Service) -> ApiKey:
    """The key of the request's key header, else of its session cookie; refuses a request with neither."""
    secret = presented_secret(request)
    if secret is not None:
        key = await service.authenticate(secret)
        if key is None:
            raise ApiError(401, "the API key is not valid (unknown or revoked)" + await no_keys_hint(service))
        return key
    key_id = request.app[SESSIONS].key_id(request.cookies.get(COOKIE))
    session_key = await service.key(key_id) if key_id is not None else None
    if session_key is not None and session_key.revoked_at is None:
        return session_key
    if getattr(request.match_info.handler, "engine_page", False):
        raise web.HTTPSeeOther(LOGIN_PATH)
    if key_id is not None:
        raise ApiError(
            401, f"the key this session signed in with has been revoked; sign in again at {LOGIN_PATH}"
        )
    raise ApiError(
        401,
        "an API key is required: send it in the x-api-key header (or Authorization: Key ...), "
        f"or sign in at {LOGIN_PATH} in a browser" + await no_keys_hint(service),
    )


@web.middleware
async def notice_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every response says plainly when the images come from random test weights."""
    response = await handler(request)
    if request.app[SERVICE].test_weights and not response.prepared:
        response.headers["x-engine-test-weights"] = "true"
        response.headers["Warning"] = '199 engine "images are noise: the server runs random test weights"'
    return response
