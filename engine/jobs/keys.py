"""API key secrets: generated with the OS's random source, stored only as a hash.

Keys are 256-bit random strings, so a plain SHA-256 is enough (no password-stretching needed: there
is nothing to guess), and looking a key up by its hash means no comparison runs over the secret.
"""

from __future__ import annotations

import hashlib
import secrets

SECRET_PREFIX = "sk_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
