"""Serving a file whole or by one byte range (RFC 9110 §14), for resumable downloads.

aiohttp's FileResponse answers 416 to a Range it cannot parse, including one in a unit other than
bytes, which RFC 9110 says a server must ignore; and it serves `bytes=-0` whole instead of refusing it.
So the Range header is read here:

- no Range, a unit other than bytes, or several ranges (multipart/byteranges is not offered): 200, whole;
- one satisfiable range: 206 with Content-Range;
- a malformed range, or one that starts past the end (`bytes=-0`, any range of an empty file): 416 with
  `Content-Range: bytes */<size>`.

An If-Range that does not match the file's ETag turns a range request into a whole one, as the RFC asks.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import hdrs, web

CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"([0-9]+)-([0-9]*)|-([0-9]+)")
BEYOND_ANY_FILE = 10**18
"""What a position of more digits than that reads as: past the end of any file (and no huge int parse)."""


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int
    """Inclusive, as Content-Range writes it."""

    @property
    def length(self) -> int:
        return self.end - self.start + 1


class Unsatisfiable(Exception):
    pass


def _position(digits: str) -> int:
    return int(digits) if len(digits) < 18 else BEYOND_ANY_FILE


def requested_range(header: str | None, size: int) -> ByteRange | None:
    """The range to send of a file of `size` bytes; None for all of it. Raises Unsatisfiable."""
    if header is None:
        return None
    unit, equals, ranges = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    specs = ranges.split(",")
    if len(specs) > 1:
        return None
    match = _RANGE.fullmatch(specs[0].strip())
    if match is None:
        raise Unsatisfiable(f"malformed range {header!r}")
    first, last, suffix = match.groups()
    if suffix is not None:
        length = _position(suffix)
        if length == 0 or size == 0:
            raise Unsatisfiable("an empty suffix range")
        return ByteRange(max(0, size - length), size - 1)
    start = _position(first)
    end = _position(last) if last else size - 1
    if end < start:
        raise Unsatisfiable("the range ends before it starts")
    if start >= size:
        raise Unsatisfiable("the range starts past the end")
    return ByteRange(start, min(end, size - 1))


async def _read(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    """The bytes, opened only once the body is sent (never for HEAD), read on a thread."""
    handle = await asyncio.to_thread(open, path, "rb")
    try:
        await asyncio.to_thread(handle.seek, start)
        while length > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK_BYTES, length))
            if not chunk:
                raise OSError(f"{path} ended {length} bytes early")
            length -= len(chunk)
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


def file_response(
    request: web.Request, path: Path, size: int, etag: str, headers: dict[str, str]
) -> web.Response:
    """The file, or the range of it the request asks for; `etag` is a strong validator of its bytes."""
    headers = {**headers, hdrs.ACCEPT_RANGES: "bytes", hdrs.ETAG: etag}
    header = request.headers.get(hdrs.RANGE)
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is not None and if_range.strip() != etag:
        header = None
    try:
        wanted = requested_range(header, size)
    except Unsatisfiable:
        headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
        return web.Response(status=416, headers=headers)
    status, start, length = 200, 0, size
    if wanted is not None:
        status, start, length = 206, wanted.start, wanted.length
        headers[hdrs.CONTENT_RANGE] = f"bytes {wanted.start}-{wanted.end}/{size}"
    headers[hdrs.CONTENT_LENGTH] = str(length)
    return web.Response(status=status, body=_read(path, start, length), headers=headers)
