"""ComfyUI's per-user routes: `/users`, `/settings` and `/userdata` (the editor's saved workflows).

Each request acts for the user `engine.users.Users` finds for it, inside that user's folder only: a
user id is never taken from a file name, and every file name is checked by `paths.path_in` after
ComfyUI's second percent-decoding. Bodies are read up to `Settings.max_userdata_bytes`.
"""

from __future__ import annotations

import json
import math
import mimetypes
import os
from pathlib import Path
from typing import Any

from aiohttp import hdrs, web

from engine.api.comfy import add_route
from engine.api.comfy.files import content_disposition
from engine.api.comfy.paths import check_name, decode_again, folder_in, path_in, relative_to
from engine.api.context import SERVICE, service
from engine.api.errors import ApiError, json_response
from engine.folders import write_atomically
from engine.users import UnknownUserError, UserNameError, Users

USERS = web.AppKey("comfy_users", Users)
USER_HEADER = "comfy-user"
MAX_SETTING_ID_CHARS = 256
ATTACHMENT_TYPES = ("text/html", "image/svg+xml", "application/javascript", "text/javascript", "text/xml")
"""Types a browser would run script from if shown in the API's origin: sent as plain downloads."""


def _users(request: web.Request) -> Users:
    return request.app[USERS]


def _user(request: web.Request) -> tuple[str, Path]:
    """The id and folder of the user the request acts for; 403 for a user this server does not have."""
    users = _users(request)
    try:
        user_id = users.user_id(request.headers.get(USER_HEADER))
        return user_id, users.folder(user_id)
    except UnknownUserError as exc:
        raise ApiError(403, str(exc)) from exc


def _user_root(request: web.Request) -> Path:
    return _user(request)[1]


async def read_body(request: web.Request) -> bytes:
    """The request body, refused with 413 beyond `max_userdata_bytes` before more of it is read."""
    limit = service(request).settings.max_userdata_bytes
    too_large = ApiError(
        413, f"the body is larger than this server's limit of {limit} bytes", limit_bytes=limit
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_json(request: web.Request) -> Any:
    raw = await read_body(request)
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError as exc:
        raise ApiError(400, "the body nests arrays or objects too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of too many digits
        raise ApiError(400, f"the body is not valid JSON: {exc}") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    """A number such as 1e400 reads as infinity, which no JSON file or response can hold."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is beyond the range of a number")
    return value


def _switch(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() in ("true", "1"):
        return True
    if value.lower() in ("false", "0"):
        return False
    raise ApiError(400, f"{name}: {value!r} is not true or false", field=name)


# -- users -----------------------------------------------------------------------------------------------


async def get_users(request: web.Request) -> web.Response:
    users = _users(request)
    if users.multi_user:
        return json_response({"storage": "server", "users": users.known()})
    _user_root(request)
    return json_response({"storage": "server", "migrated": True})


async def post_users(request: web.Request) -> web.Response:
    users = _users(request)
    if not users.multi_user:
        raise ApiError(400, "this server has a single user; start it with --multi-user to create users")
    body = await _read_json(request)
    if not isinstance(body, dict):
        raise ApiError(400, 'the body must be {"username": "..."}')
    try:
        return json_response(users.add(body.get("username")))
    except UserNameError as exc:
        raise ApiError(400, str(exc), field="username") from exc


# -- settings --------------------------------------------------------------------------------------------


def _setting_id(setting_id: str) -> str:
    """A setting id is a key of the settings file, never a path; ids that look like one are refused all
    the same (the editor's ids are dotted names such as `Comfy.TutorialCompleted`). Ids in a URL are
    decoded a second time, as userdata names are."""
    check_name(setting_id, "id")
    if (
        not setting_id
        or len(setting_id) > MAX_SETTING_ID_CHARS
        or "/" in setting_id
        or "\\" in setting_id
        or setting_id.strip(".") == ""
    ):
        raise ApiError(
            400,
            f"id: {setting_id!r} is not a setting id (at most {MAX_SETTING_ID_CHARS} characters, no slashes)",
            field="id",
        )
    return setting_id


def _user_id(request: web.Request) -> str:
    return _user(request)[0]


async def get_settings(request: web.Request) -> web.Response:
    return json_response(_users(request).settings(_user_id(request)))


async def get_setting(request: web.Request) -> web.Response:
    setting_id = _setting_id(decode_again(request.match_info["id"], "id"))
    return json_response(_users(request).settings(_user_id(request)).get(setting_id))


async def post_settings(request: web.Request) -> web.Response:
    user = _user_id(request)
    changes = await _read_json(request)
    if not isinstance(changes, dict):
        raise ApiError(400, "the body must be a JSON object of setting ids and values")
    for setting_id in changes:
        _setting_id(setting_id)
    _users(request).update_settings(user, changes)
    return web.Response(status=200)


async def post_setting(request: web.Request) -> web.Response:
    user = _user_id(request)
    setting_id = _setting_id(decode_again(request.match_info["id"], "id"))
    value = await _read_json(request)
    _users(request).update_settings(user, {setting_id: value})
    return web.Response(status=200)


# -- userdata --------------------------------------------------------------------------------------------


def _file_info(path: Path, root: Path) -> dict[str, Any]:
    stat = path.stat()
    return {
        "path": relative_to(path, root),
        "size": stat.st_size,
        "modified": int(stat.st_mtime * 1000),
        "created": int(stat.st_ctime * 1000),
    }


def _inside(path: Path, root: Path) -> bool:
    """Whether `path` (a listing's entry) really is in `root`, and not reached through a link out."""
    try:
        return path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):
        return False


def _walk(directory: Path, recurse: bool) -> list[tuple[Path, bool]]:
    """(path, is a folder) below `directory`, sorted; links are not followed into other folders."""
    found: list[tuple[Path, bool]] = []
    for current, subdirectories, files in os.walk(directory):
        subdirectories.sort()
        base = Path(current)
        found.extend((base / name, True) for name in subdirectories)
        found.extend((base / name, False) for name in sorted(files))
        if not recurse:
            break
    return found


def _user_file(request: web.Request, root: Path, param: str) -> Path:
    name = decode_again(request.match_info[param], param)
    return path_in(root, name, param)


async def list_userdata(request: web.Request) -> web.Response:
    """ComfyUI's listing: the files below `dir`, as paths relative to it, `[path, *parts]` with
    `split=true`, or `{path, size, modified, created}` with `full_info=true`."""
    root = _user_root(request)
    directory_name = request.query.get("dir", "")
    if not directory_name:
        raise ApiError(400, "dir: the folder to list is required", field="dir")
    directory = folder_in(root, decode_again(directory_name, "dir"), "dir")
    if not directory.is_dir():
        raise ApiError(404, f"dir: {directory_name!r} is not a folder of this user", field="dir")
    recurse = _switch(request, "recurse", False)
    full_info = _switch(request, "full_info", False)
    split = _switch(request, "split", False)
    listing: list[Any] = []
    for path, is_folder in _walk(directory, recurse):
        if is_folder or not path.is_file() or not _inside(path, root):
            continue
        if full_info:
            listing.append(_file_info(path, directory))
        else:
            relative = relative_to(path, directory)
            listing.append([relative, *relative.split("/")] if split else relative)
    return json_response(listing)


async def list_userdata_v2(request: web.Request) -> web.Response:
    """Every file and folder below `path` (the user's folder by default), folders first, each with its
    path relative to the user's folder."""
    root = _user_root(request)
    name = request.query.get("path", "")
    directory = folder_in(root, decode_again(name, "path"), "path")
    if not directory.exists():
        raise ApiError(404, f"path: {name!r} is not in this user's folder", field="path")
    if not directory.is_dir():
        raise ApiError(400, f"path: {name!r} is not a folder", field="path")
    entries: list[dict[str, Any]] = []
    for path, is_folder in _walk(directory, recurse=True):
        if not _inside(path, root):
            continue
        entry: dict[str, Any] = {
            "name": path.name,
            "path": relative_to(path, root),
            "type": "directory" if is_folder else "file",
        }
        if not is_folder:
            try:
                stat = path.stat()
            except OSError:  # a dangling link: listed, as ComfyUI lists it, without size or time
                stat = None
            if stat is not None:
                entry |= {"size": stat.st_size, "modified": stat.st_mtime}
        entries.append(entry)
    entries.sort(key=lambda entry: (entry["type"] != "directory", entry["name"].lower()))
    return json_response(entries)


async def get_userdata(request: web.Request) -> web.StreamResponse:
    """A user's file, always as a download: it is whatever a client stored, and must not run as a page."""
    root = _user_root(request)
    path = _user_file(request, root, "file")
    if not path.is_file():
        raise ApiError(404, f"file: {relative_to(path, root)!r} is not in this user's folder", field="file")
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type in ATTACHMENT_TYPES:
        content_type = "application/octet-stream"
    return web.FileResponse(
        path,
        headers={
            hdrs.CONTENT_TYPE: content_type,
            hdrs.CONTENT_DISPOSITION: content_disposition("attachment", path.name),
            "X-Content-Type-Options": "nosniff",
        },
    )


def _written(path: Path, root: Path, full_info: bool) -> web.Response:
    return json_response(_file_info(path, root) if full_info else relative_to(path, root))


async def post_userdata(request: web.Request) -> web.Response:
    """Store the body as the user's file; `overwrite=false` answers 409 when the file exists."""
    root = _user_root(request)
    path = _user_file(request, root, "file")
    overwrite = _switch(request, "overwrite", True)
    full_info = _switch(request, "full_info", False)
    if path.is_dir():
        raise ApiError(409, f"file: {relative_to(path, root)!r} is a folder", field="file")
    if not overwrite and os.path.lexists(path):
        raise ApiError(409, f"file: {relative_to(path, root)!r} already exists", field="file")
    body = await read_body(request)
    try:
        write_atomically(path, body)
    except OSError as exc:
        raise ApiError(409, f"file: cannot write {relative_to(path, root)!r}: {exc.strerror or exc}") from exc
    return _written(path, root, full_info)


async def delete_userdata(request: web.Request) -> web.Response:
    root = _user_root(request)
    path = _user_file(request, root, "file")
    if not path.is_file():
        raise ApiError(404, f"file: {relative_to(path, root)!r} is not in this user's folder", field="file")
    path.unlink()
    return web.Response(status=204)


async def move_userdata(request: web.Request) -> web.Response:
    """Rename a user's file; `overwrite=false` answers 409 when the destination exists."""
    root = _user_root(request)
    source = _user_file(request, root, "file")
    destination = _user_file(request, root, "dest")
    overwrite = _switch(request, "overwrite", True)
    full_info = _switch(request, "full_info", False)
    if not source.is_file():
        raise ApiError(404, f"file: {relative_to(source, root)!r} is not in this user's folder", field="file")
    if destination.is_dir():
        raise ApiError(409, f"dest: {relative_to(destination, root)!r} is a folder", field="dest")
    if not overwrite and os.path.lexists(destination):
        raise ApiError(409, f"dest: {relative_to(destination, root)!r} already exists", field="dest")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)
    except OSError as exc:
        raise ApiError(409, f"dest: cannot move there: {exc.strerror or exc}", field="dest") from exc
    return _written(destination, root, full_info)


def add_routes(app: web.Application) -> None:
    settings = app[SERVICE].settings
    app[USERS] = Users(settings.users_path, multi_user=settings.multi_user)
    add_route(app, "GET", "/users", get_users)
    add_route(app, "POST", "/users", post_users)
    add_route(app, "GET", "/settings", get_settings)
    add_route(app, "POST", "/settings", post_settings)
    add_route(app, "GET", "/settings/{id}", get_setting)
    add_route(app, "POST", "/settings/{id}", post_setting)
    add_route(app, "GET", "/userdata", list_userdata)
    add_route(app, "GET", "/v2/userdata", list_userdata_v2)
    add_route(app, "GET", "/userdata/{file}", get_userdata)
    add_route(app, "POST", "/userdata/{file}", post_userdata)
    add_route(app, "DELETE", "/userdata/{file}", delete_userdata)
    add_route(app, "POST", "/userdata/{file}/move/{dest}", move_userdata)
