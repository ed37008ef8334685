"""Signed-in browser sessions: the editor's stand-in for an API key header, which a page cannot send.

A session is a cookie holding a token the server signed (HMAC-SHA256) with a secret kept in the data
folder: the key's id, an expiry time and a random nonce. Nothing is stored per session, so a restart
or a second API process sharing the data folder accepts the same sessions, as the API processes of
a fleet share nothing but the store. Each request looks the key up again, so revoking a key ends its
sessions at once. Signing out deletes the cookie from the browser; a copy taken earlier stays valid
until it expires (SESSION_SECONDS) or its key is revoked: revoke the key to end every session.

The cookie is HttpOnly (no script reads it), Path=/, Secure when the server is reached over TLS
(directly, or behind a proxy whose https address is the public URL), and SameSite=Strict: the browser
attaches it only to requests that this server's own pages start, never to a request, a form post, a
websocket or even a link that another site starts. The price is that following a link to the editor
from another site shows the sign-in page once more; an operator's console can pay that, and it keeps
the cookie out of every cross-site request whatever the route (engine.api.origin refuses those too).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

COOKIE = "engine_session"
SESSION_SECONDS = 12 * 3600
"""How long a sign-in lasts: a working day, after which the editor asks for the key again."""
SECRET_FILE = "session_secret"
"""The signing secret's file in the data folder (created on first start, readable by the server only)."""
_VERSION = "s1"


def _signature(secret: bytes, payload: str) -> str:
    digest = hmac.new(secret, f"engine-session|{payload}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True)
class Sessions:
    """Issues and checks session tokens: `{version}.{key id}.{expiry}.{nonce}.{signature}`."""

    secret: bytes
    clock: Callable[[], float] = field(default=time.time)

    def issue(self, key_id: str) -> str:
        expires = int(self.clock()) + SESSION_SECONDS
        payload = f"{_VERSION}.{key_id}.{expires}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{_signature(self.secret, payload)}"

    def key_id(self, token: str | None) -> str | None:
        """The key a genuine, unexpired token was issued for; None for anything else."""
        if not token:
            return None
        payload, _, signature = token.rpartition(".")
        if not hmac.compare_digest(signature.encode(), _signature(self.secret, payload).encode()):
            return None
        version, key_id, expires, _nonce = payload.split(".")
        if version != _VERSION or int(expires) <= self.clock():
            return None
        return key_id


def is_secure(request: web.Request, base_url: str) -> bool:
    """Whether the browser reaches this server over TLS, so the cookie may be marked Secure."""
    return request.secure or base_url.startswith("https://")


def set_cookie(response: web.StreamResponse, token: str, *, secure: bool) -> None:
    response.set_cookie(
        COOKIE, token, max_age=SESSION_SECONDS, path="/", httponly=True, samesite="Strict", secure=secure
    )


def delete_cookie(response: web.StreamResponse, *, secure: bool) -> None:
    response.del_cookie(COOKIE, path="/", httponly=True, samesite="Strict", secure=secure)
