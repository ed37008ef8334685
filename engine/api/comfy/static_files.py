"""Serving the files of installed packages (the editor, node documentation, workflow templates) by name.

A folder is listed once, at start-up, into a table of its regular files by relative path; a request
is answered from that table or not at all. No request path is ever joined to a directory, so no
spelling of `..`, no encoded slash, backslash or NUL can reach another file, and a symbolic link is
never followed (links are left out of the table, as are folders reached only through one).

Content types come from a fixed table for what these packages ship (a browser refuses a module
script served with the wrong type), the rest from Python's guess. Caching: names that carry a
content hash (the editor's build output in assets/, `index-B2rHQ9Sn.js`) never change, so browsers
keep them for a year; everything else (index.html above all, which names the current hashed files)
is revalidated on every use (`no-cache`), cheaply, by its ETag and Last-Modified.
"""

from __future__ import annotations

import functools
import mimetypes
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from aiohttp import web

from engine.api.errors import ApiError

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".eot": "application/vnd.ms-fontobject",
    ".webm": "video/webm",
    ".mp4": "video/mp4",
    ".mp3": "audio/mpeg",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".glb": "model/gltf-binary",
    ".wasm": "application/wasm",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
HASHED_NAME = re.compile(r"-[A-Za-z0-9_-]{8}\.[A-Za-z0-9]+(\.map)?$")
"""A build tool's content-hashed file name: `index-B2rHQ9Sn.js`, `AboutPanel-BpzDKpyw.js.map`."""


def content_type(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def is_hashed(relative_path: str) -> bool:
    """Only directly in the top `assets` folder, where the editor's build writes its output: the files
    it copies as they are sit below (assets/images/comfy-logo-wordmark.svg), or beside it (favicon.ico)."""
    folder, _, name = relative_path.rpartition("/")
    return folder == "assets" and HASHED_NAME.search(name) is not None


@dataclass(frozen=True)
class StaticFiles:
    """The regular files under `root`, by `/`-separated path relative to it."""

    root: Path
    files: Mapping[str, Path]

    def top_level(self) -> tuple[set[str], set[str]]:
        """(files, folders) directly under the root, by name."""
        files = {name for name in self.files if "/" not in name}
        folders = {name.split("/", 1)[0] for name in self.files if "/" in name}
        return files, folders

    def response(self, relative_path: str, *, cache_control: str | None = None) -> web.FileResponse:
        """The file at `relative_path`, or a 404 naming the path; `cache_control` overrides the default."""
        path = self.files.get(relative_path)
        if path is None:
            raise ApiError(404, f"no such file: {relative_path!r}")
        return file_response(relative_path, path, cache_control=cache_control)


def file_response(name: str, path: Path, *, cache_control: str | None = None) -> web.FileResponse:
    headers = {
        "Content-Type": content_type(name),
        "Cache-Control": cache_control or (IMMUTABLE if is_hashed(name) else REVALIDATE),
        "X-Content-Type-Options": "nosniff",
    }
    return web.FileResponse(path, headers=headers)


@functools.cache
def list_files(root: Path) -> StaticFiles:
    """The table of `root`'s regular files. Installed packages do not change while the server runs, so
    each folder is listed once per process (the test suite starts many servers)."""
    if not root.is_dir():
        raise RuntimeError(f"{root} is not a folder: is its package installed? pip install -e . installs it")
    files: dict[str, Path] = {}
    for directory, _, names in os.walk(root):  # does not descend into linked folders
        for name in names:
            path = Path(directory, name)
            if not path.is_symlink() and path.is_file():
                files[path.relative_to(root).as_posix()] = path
    return StaticFiles(root, files)
