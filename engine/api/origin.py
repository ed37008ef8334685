"""Refuse state-changing requests that another site's page makes a browser send (cross-site forgery).

A browser lets any page send a form post, or a `fetch` that needs no preflight, to any address,
this server on 127.0.0.1 included, and attaches this server's session cookie to it unless SameSite
stops it. So every POST, PUT, PATCH or DELETE, and every websocket handshake (which no CORS check
guards), is refused with 403 when the browser says it comes from another origin: its `Origin`
header names a different scheme://host:port (or is `null`: a sandboxed frame, a file), or, without
`Origin`, its `Sec-Fetch-Site` says `cross-site` or `same-site` (another port or subdomain of the
same site is still another origin). A request with neither header passes: curl, the Segmind, fal
and ComfyUI clients and every other program that is not a browser send none, and the API key they
send is their proof. The check does not care how the request authenticates: with --open-access
there is nothing else stopping a page from queueing work on a local server, and a browser only sends
an API key header to another origin after a CORS preflight, which this server never grants.

What counts as this server's own origin: the public base URL (`--public-url`, else the address the
server listens on), and the origin the request itself was addressed to (its scheme and Host header).
ComfyUI's own check compares only the Origin's host with the Host header, and only when the Host is
a loopback address. The base URL alone would refuse the editor opened at another name for the same
server (localhost rather than 127.0.0.1, a LAN address when bound to 0.0.0.0); the Host header alone
is what a browser addresses, so it still differs from a forging page's Origin. Neither defends
against DNS rebinding, where the attacker's name itself resolves to this server: there the page is
same-origin as far as the browser knows, and a session cookie (issued for this server's own name)
is not sent, so only an open-access server is exposed, as ComfyUI is.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import hdrs, web

from engine.api.context import base_url
from engine.api.errors import ApiError, Handler

STATE_CHANGING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def normalized_origin(url: str) -> str | None:
    """`scheme://host:port` with the default port written out and the host in lower case; None when
    `url` is not an http(s) origin (`null`, another scheme, a malformed port)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}:{port or DEFAULT_PORTS[scheme]}"


def own_origins(request: web.Request) -> set[str]:
    """The origins a page of this server has: the public base URL's, and the one this request was sent to."""
    origins = {normalized_origin(base_url(request)), normalized_origin(f"{request.scheme}://{request.host}")}
    return {origin for origin in origins if origin is not None}


def _is_websocket_handshake(request: web.Request) -> bool:
    return request.method == "GET" and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def foreign_origin(request: web.Request) -> str | None:
    """Why the browser that sent this request says it comes from another origin; None when it does not."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None:
        normalized = normalized_origin(origin)
        if normalized is None or normalized not in own_origins(request):
            return f"Origin {origin!r}"
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site in FOREIGN_FETCH_SITES:
        return f"Sec-Fetch-Site {fetch_site!r}"
    return None


@web.middleware
async def origin_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method in STATE_CHANGING_METHODS or _is_websocket_handshake(request):
        foreign = foreign_origin(request)
        if foreign is not None:
            what = "websocket connection" if request.method == "GET" else f"{request.method} request"
            raise ApiError(
                403,
                f"cross-origin {what} refused: the browser reports {foreign}, not this server's own "
                f"origin ({base_url(request)}). Only this server's own pages may change state from a "
                "browser; programs that are not browsers send no Origin header and are not affected",
            )
    return await handler(request)
