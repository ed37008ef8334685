"""Signing in to the editor with an API key: `GET /login` (the form), `POST /login`, `POST /logout`.

A browser page cannot attach an API key header to what it loads, so the editor's pages and its API
calls carry a session cookie instead (engine.api.sessions); the sign-in form trades a key for one.
The page is self-contained (no script, no external file) and says so in its Content-Security-Policy.
A server started with --open-access has nothing to sign in to: these routes send the browser on to
the editor.

Sign-in attempts are rate limited per client address, LOGIN_ATTEMPTS_PER_MINUTE of them with a
burst of as many: the keys are 256-bit random strings that no number of guesses finds, but each
attempt costs a store lookup and shows up in the logs, so a script hammering the form is slowed to
a trickle. Behind a proxy every client shares the proxy's address and so one allowance.
"""

from __future__ import annotations

import html

from aiohttp import web

from engine.api.auth import LOGIN_PATH, no_keys_hint, public
from engine.api.bodies import read_fields
from engine.api.context import SESSIONS, base_url, service
from engine.api.rate_limit import retry_after_header
from engine.api.sessions import delete_cookie, is_secure, set_cookie

EDITOR_PATH = "/"
KEY_FIELD = "key"
LOGIN_ATTEMPTS_PER_MINUTE = 10
MAX_KEY_CHARS = 1024
"""Far above a key's length (46 characters): anything longer is refused before it is hashed."""
PAGE_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    # same-origin, not no-referrer: under no-referrer a browser sends the form's post with `Origin: null`,
    # which engine.api.origin refuses as it must
    "Referrer-Policy": "same-origin",
}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="icon" href="data:,">
<title>Sign in</title>
<style>
body{{margin:0;min-height:100vh;display:grid;place-items:center;background:#171718;color:#eee;
font:16px system-ui,sans-serif}}
form{{display:grid;gap:12px;width:min(360px,90vw);padding:28px;border-radius:10px;background:#232325}}
h1{{margin:0 0 4px;font-size:20px}}label{{font-size:14px;color:#bbb}}
input{{padding:10px;border:1px solid #444;border-radius:6px;background:#111;color:#eee;font:inherit}}
button{{padding:10px;border:0;border-radius:6px;background:#3b82f6;color:#fff;font:inherit;cursor:pointer}}
p.error{{margin:0;padding:8px 10px;border-radius:6px;background:#4c1d1d;color:#fecaca}}
</style></head>
<body><form method="post" action="{action}">
<h1>Sign in</h1>
{error}<label for="key">API key</label>
<input id="key" name="{field}" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form></body></html>
"""


def login_page(
    error: str | None = None, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """The sign-in form, with `error` (plain text) shown above it."""
    shown = f'<p class="error" role="alert">{html.escape(error)}</p>\n' if error else ""
    return web.Response(
        text=_PAGE.format(action=LOGIN_PATH, field=KEY_FIELD, error=shown),
        status=status,
        content_type="text/html",
        headers={**PAGE_SECURITY_HEADERS, **(headers or {})},
    )


def see_other(location: str) -> web.Response:
    """A 303 answer (a form post followed by a GET), returned rather than raised so it keeps its cookies."""
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


@public
async def show_login(request: web.Request) -> web.StreamResponse:
    if service(request).settings.open_access:
        return see_other(EDITOR_PATH)
    return login_page()


@public
async def log_in(request: web.Request) -> web.StreamResponse:
    engine = service(request)
    if engine.settings.open_access:
        return see_other(EDITOR_PATH)
    wait = await engine.store.rate_limit(f"login {request.remote}", LOGIN_ATTEMPTS_PER_MINUTE)
    if wait > 0:
        return login_page(
            f"Too many sign-in attempts from this address; try again in {retry_after_header(wait)} s.",
            status=429,
            headers={"Retry-After": retry_after_header(wait)},
        )
    fields, _ = await read_fields(request)
    secret = fields.get(KEY_FIELD)
    if not isinstance(secret, str) or not secret.strip():
        return login_page(f"Enter an API key (the form field '{KEY_FIELD}').", status=400)
    if len(secret) > MAX_KEY_CHARS:
        return login_page(f"That is not an API key: it is over {MAX_KEY_CHARS} characters long.", status=400)
    key = await engine.authenticate(secret.strip())
    if key is None:
        hint = await no_keys_hint(engine)
        return login_page(f"That API key is not valid (unknown or revoked){hint}.", status=401)
    response = see_other(EDITOR_PATH)
    set_cookie(response, request.app[SESSIONS].issue(key.id), secure=is_secure(request, base_url(request)))
    return response


@public
async def log_out(request: web.Request) -> web.StreamResponse:
    response = see_other(LOGIN_PATH)
    delete_cookie(response, secure=is_secure(request, base_url(request)))
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get(LOGIN_PATH, show_login)
    app.router.add_post(LOGIN_PATH, log_in)
    app.router.add_post("/logout", log_out)
