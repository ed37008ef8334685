"""A client's declared content type, checked against the bytes it sent.

The type is the client's claim, but for the formats whose first bytes say what they are (images,
audio, video, PDF) the claim must agree with the bytes: an upload declared `image/png` that holds a
JPEG, or HTML, is refused rather than stored under a false type. Bytes of a format not listed here
keep the declared type; `application/octet-stream` claims nothing and is accepted for any bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable

GENERIC = "application/octet-stream"

_TOKEN = r"[A-Za-z0-9!#$&^_.+-]{1,127}"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})\s*(;.*)?", re.DOTALL)

ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
"""Non-standard names clients send for standard types."""


def _riff(head: bytes, form: bytes) -> bool:
    return head[:4] == b"RIFF" and head[8:12] == form


SIGNATURES: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("image/png", lambda h: h.startswith(b"\x89PNG\r\n\x1a\n")),
    ("image/jpeg", lambda h: h.startswith(b"\xff\xd8\xff")),
    ("image/gif", lambda h: h[:6] in (b"GIF87a", b"GIF89a")),
    ("image/webp", lambda h: _riff(h, b"WEBP")),
    ("image/tiff", lambda h: h[:4] in (b"II*\x00", b"MM\x00*")),
    ("audio/wav", lambda h: _riff(h, b"WAVE")),
    ("audio/flac", lambda h: h.startswith(b"fLaC")),
    ("application/pdf", lambda h: h.startswith(b"%PDF-")),
)
"""Formats recognised by their first bytes (a subset of the WHATWG MIME sniffing signatures): only those
whose signature is long enough, and names one type only, to refuse a claim on its evidence."""

SNIFFED = {name for name, _ in SIGNATURES}
EQUIVALENT = {"audio/x-wav": "audio/wav", "audio/wave": "audio/wav", "audio/x-flac": "audio/flac"}


def normalise(declared: str) -> str | None:
    """`type/subtype` in lowercase (parameters dropped, aliases resolved), or None if it is not a
    media type."""
    match = _MEDIA_TYPE.fullmatch(declared.strip())
    if match is None:
        return None
    essence = f"{match.group(1)}/{match.group(2)}".lower()
    return ALIASES.get(essence, EQUIVALENT.get(essence, essence))


def sniff(head: bytes) -> str | None:
    """The format the first bytes of a file announce, if it is one of SIGNATURES."""
    for name, matches in SIGNATURES:
        if matches(head):
            return name
    return None


def check(declared: str, head: bytes) -> str:
    """The content type to store for bytes starting with `head`; ValueError says why the claim is refused."""
    essence = normalise(declared)
    if essence is None:
        raise ValueError(f"{declared!r} is not a media type (type/subtype, e.g. image/png)")
    if essence == GENERIC:
        return essence
    found = sniff(head)
    if essence in SNIFFED and found != essence:
        what = found if found else f"not {essence}"
        raise ValueError(f"content_type is {essence} but the bytes are {what}")
    if found is not None and found != essence:
        raise ValueError(f"content_type is {essence} but the bytes are {found}")
    return essence
