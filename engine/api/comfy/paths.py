"""Client-supplied file names to paths that stay inside their folder, or a clear 4xx.

Every ComfyUI route that takes a name (a `/view` file, an upload's subfolder, a userdata file, an
extension's path) goes through `path_in`. The checks are those of `engine.folders.resolve_in` (no
`..` segment, no absolute path or drive letter, either separator, no link leading out) plus what
would otherwise surface as a server error: control characters, names longer than a file system takes,
links that loop. A name is checked after the one decoding aiohttp applies to the URL; userdata names are
decoded once more first, as ComfyUI does (`decode_again`), so a doubly-encoded `..` is still refused.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

from engine import folders
from engine.api.errors import ApiError
from engine.endpoints.fields import is_unicode_text

MAX_NAME_CHARS = 1024
MAX_SEGMENT_BYTES = 255
"""What Linux and macOS file systems take for one file name; a longer one fails with an OS error."""


def check_name(name: str, field: str) -> str:
    """`name` if it is text a file name can be made of; a 400 naming `field` otherwise."""
    if not is_unicode_text(name) or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ApiError(400, f"{field}: {name!a} holds control characters or invalid text", field=field)
    if len(name) > MAX_NAME_CHARS:
        raise ApiError(400, f"{field}: the name is longer than {MAX_NAME_CHARS} characters", field=field)
    for segment in name.replace("\\", "/").split("/"):
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise ApiError(
                400, f"{field}: a name between slashes is longer than {MAX_SEGMENT_BYTES} bytes", field=field
            )
    return name


def path_in(root: Path, name: str, field: str) -> Path:
    """`root`/`name` for a client-supplied `name` that stays inside `root`: 400 for a name that is not a
    plain relative path, 403 for one that a link inside `root` leads out of."""
    check_name(name, field)
    try:
        folders.relative_name(name)
    except folders.PathEscapeError as exc:
        raise ApiError(400, f"{field}: {exc}", field=field) from exc
    try:
        return folders.resolve_in(root, name)
    except folders.PathEscapeError as exc:
        raise ApiError(403, f"{field}: {exc}", field=field) from exc
    except (OSError, RuntimeError) as exc:  # a link loop (RuntimeError before Python 3.13)
        raise ApiError(400, f"{field}: {name!r} cannot be resolved: {exc}", field=field) from exc


def folder_in(root: Path, name: str, field: str) -> Path:
    """Like `path_in` for a folder, where an empty name or '.' is `root` itself."""
    return root if name in ("", ".") else path_in(root, name, field)


def decode_again(name: str, field: str) -> str:
    """ComfyUI percent-decodes userdata names a second time when they still hold a '%' (clients encode
    the '/' in `workflows%2Fa.json`, and some encode it twice); the server must read them alike."""
    if "%" not in name:
        return name
    try:
        return unquote(name, errors="strict")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"{field}: {name!r} decodes to invalid UTF-8", field=field) from exc


def relative_to(path: Path, root: Path) -> str:
    """`path` as clients name it below `root`: '/'-separated, never resolved through links."""
    return path.relative_to(root).as_posix()
