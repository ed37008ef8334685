"""Every ComfyUI route that takes a file or folder name, attacked with every way of leaving the folder.

ComfyUI has had path-traversal bugs in `/view` and the uploads; a serving engine reachable over a
network must not. Each case sends one hostile name to one route and checks that the answer is a
4xx with a JSON error, that no byte of the secret file outside the served folders comes back, and
that the folder holding it is unchanged (nothing read, written, moved or deleted there).

Requests go out as raw bytes on a socket: HTTP libraries normalise `..` segments and re-encode
paths, which would test the library rather than the server. The server records the request target
it received, and each case checks it is byte for byte the one sent, so the hostile form did reach
the route. The symbolic links are real links in the served folders pointing at the secret.
"""

from __future__ import annotations

import io
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from PIL import Image, PngImagePlugin

import tests.api.conftest as api_conftest
from engine.settings import Settings
from tests.api.conftest import HERE, LiveServer

MARKER = "SECRET-7f3a9c-MUST-NOT-LEAK"
WEB_PACKAGE = "battery_web"


def _secret_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("secret", MARKER)
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), (1, 2, 3, 255)).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


SECRET_PNG = _secret_png()


@dataclass(frozen=True)
class Target:
    server: LiveServer
    user: str
    """A user of the multi-user server, sent in every request's comfy-user header."""
    outside: Path
    """The folder holding the secret, outside every served folder."""
    depth: int
    """How many '../' climb from the deepest served folder to '/'."""
    seen: list[str]
    """Request targets as the server received them (request.raw_path), in order."""

    def snapshot(self) -> dict[str, bytes]:
        return {
            str(path.relative_to(self.outside)): path.read_bytes() if path.is_file() else b"<dir>"
            for path in sorted(self.outside.rglob("*"))
        }


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def raw_request(url: str, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Reply:
    """One HTTP/1.1 request written byte for byte as given (no normalising, no re-encoding)."""
    parts = urlsplit(url)
    lines = [f"{method} {target} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(head + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head_bytes, _, payload = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head_bytes.decode("latin-1").split("\r\n")
    reply_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        reply_headers[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split()[1]), reply_headers, payload)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, test_models: Path, graphs_dir: Path) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("traversal")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(SECRET_PNG)
    nodes = root / "nodes"
    package = nodes / WEB_PACKAGE
    (package / "web").mkdir(parents=True)
    (package / "__init__.py").write_text('NODE_CLASS_MAPPINGS = {}\nWEB_DIRECTORY = "web"\n')
    (package / "web" / "ok.js").write_text("export {}\n")
    settings = Settings(
        base_dir=root / "base",
        models_dir=test_models,
        graphs_dir=graphs_dir,
        custom_nodes_dirs=(HERE / "custom_nodes", nodes),
        test_models=False,
        warmup_endpoints=(),
        open_access=True,
        multi_user=True,
    )
    seen: list[str] = []
    original_create_app = api_conftest.create_app

    def recording_create_app(*args: object) -> web.Application:
        app = original_create_app(*args)  # type: ignore[arg-type]

        async def record(request: web.Request, _: web.StreamResponse) -> None:
            seen.append(request.raw_path)

        app.on_response_prepare.append(record)
        return app

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(api_conftest, "create_app", recording_create_app)
        with LiveServer(settings) as server:
            with server.client() as client:
                user = client.post("/users", json={"username": "alice"}).json()
                headers = {"comfy-user": user}
                assert client.post("/userdata/mine.json", content=b"{}", headers=headers).status_code == 200
            user_root = settings.users_path / user
            for folder in (root / "base" / "input", root / "base" / "output", user_root, package / "web"):
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "link.png").symlink_to(outside / "secret.png")
                (folder / "linkdir").symlink_to(outside, target_is_directory=True)
            yield Target(server, user, outside, len(user_root.parts), seen)


# -- the hostile forms ---------------------------------------------------------------------------------
# Each form turns the path that climbs from a served folder to the secret ('../' enough times, then the
# secret's path below '/') into what is sent. URL forms are written into a request target as they stand;
# text forms are the name itself, for places where no URL decoding happens (form fields, JSON, headers).

Form = Callable[[str, Path], str]
"""(climbing relative path, the secret's absolute path) -> what is sent."""


def _link(climb: str, through_folder: str) -> str:
    return "linkdir" if climb.endswith("outside") else f"linkdir{through_folder}secret.png"


URL_FORMS: dict[str, Form] = {
    "dotdot": lambda climb, _: climb,
    "encoded_slash": lambda climb, _: climb.replace("/", "%2F"),
    "encoded_dots": lambda climb, _: climb.replace(".", "%2e").replace("/", "%2f"),
    "encoded_upper": lambda climb, _: climb.replace(".", "%2E").replace("/", "%2F"),
    "double_encoded": lambda climb, _: climb.replace(".", "%252e").replace("/", "%252f"),
    "backslash": lambda climb, _: climb.replace("/", "%5C"),
    "mixed_separators": lambda climb, _: climb.replace("../", "..%5C..%2F"),
    "dot_segments": lambda climb, _: climb.replace("../", "./%2e%2e/.%2F"),
    "overlong_utf8": lambda climb, _: climb.replace(".", "%c0%ae").replace("/", "%c0%af"),
    "absolute": lambda _, secret: str(secret).replace("/", "%2F"),
    "absolute_backslash": lambda _, secret: str(secret).replace("/", "%5C"),
    "windows_drive": lambda _, secret: "C%3A" + str(secret).replace("/", "%5C"),
    "nul": lambda climb, _: climb.replace("/", "%2F") + "%00.png",
    "nul_alone": lambda climb, _: "ok%00",
    "symlink": lambda climb, _: "linkdir" if climb.endswith("outside") else "link.png",
    "symlinked_folder": lambda climb, _: _link(climb, "%2F"),
}

TEXT_FORMS: dict[str, Form] = {
    "dotdot": lambda climb, _: climb,
    "backslash": lambda climb, _: climb.replace("/", "\\"),
    "mixed_separators": lambda climb, _: climb.replace("../", "..\\../"),
    "dot_segments": lambda climb, _: climb.replace("../", "./.././"),
    "absolute": lambda _, secret: str(secret),
    "absolute_backslash": lambda _, secret: str(secret).replace("/", "\\"),
    "windows_drive": lambda _, secret: "C:" + str(secret).replace("/", "\\"),
    "nul": lambda climb, _: climb + "\x00.png",
    "symlink": lambda climb, _: "linkdir" if climb.endswith("outside") else "link.png",
    "symlinked_folder": lambda climb, _: _link(climb, "/"),
}


# -- the routes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes = b""


def _png(size: tuple[int, int] = (4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", size, (9, 9, 9, 128)).save(buffer, format="PNG")
    return buffer.getvalue()


def _multipart(fields: dict[str, str], filename: str, data: bytes) -> tuple[dict[str, str], bytes]:
    boundary = uuid.uuid4().hex
    quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
    body = b""
    for name, value in fields.items():
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        body += value.encode("utf-8", "surrogateescape") + b"\r\n"
    body += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{quoted}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode("utf-8", "surrogateescape")
    body += data + f"\r\n--{boundary}--\r\n".encode()
    return {"Content-Type": f"multipart/form-data; boundary={boundary}"}, body


Build = Callable[[str, str, str], Request]
"""(user, name of the secret file as the form writes it, name of its folder) -> the request."""


def _get(path: str) -> Build:
    return lambda user, file, folder: Request(
        "GET", path.format(file=file, folder=folder), {"comfy-user": user}
    )


def _upload(user: str, fields: dict[str, str], filename: str, data: bytes, route: str) -> Request:
    headers, body = _multipart(fields, filename, data)
    return Request("POST", route, {"comfy-user": user, **headers}, body)


URL_ROUTES: dict[str, Build] = {
    "view filename": _get("/view?type=output&filename={file}"),
    "view subfolder": _get("/view?type=output&filename=secret.png&subfolder={folder}"),
    "api view, input": _get("/api/view?type=input&filename={file}"),
    "view preview": _get("/view?filename={file}&preview=webp;90&channel=a"),
    "userdata get": _get("/userdata/{file}"),
    "userdata list": _get("/userdata?dir={folder}&recurse=true&full_info=true"),
    "userdata v2 list": _get("/v2/userdata?path={folder}"),
    "userdata post": lambda user, file, _: Request(
        "POST", f"/userdata/{file}?overwrite=true", {"comfy-user": user}, b"pwned"
    ),
    "userdata delete": lambda user, file, _: Request("DELETE", f"/api/userdata/{file}", {"comfy-user": user}),
    "userdata move from": lambda user, file, _: Request(
        "POST", f"/userdata/{file}/move/stolen.png", {"comfy-user": user}
    ),
    "userdata move to": lambda user, file, _: Request(
        "POST", f"/userdata/mine.json/move/{file}?overwrite=true", {"comfy-user": user}
    ),
    "setting get": _get("/settings/{file}"),
    "setting post": lambda user, file, _: Request("POST", f"/settings/{file}", {"comfy-user": user}, b"1"),
    "extension file": _get(f"/extensions/{WEB_PACKAGE}/{{file}}"),
    "model folder": _get("/models/{folder}"),
}

TEXT_ROUTES: dict[str, Build] = {
    "upload file name": lambda user, file, _: _upload(
        user, {"overwrite": "true"}, file, _png(), "/upload/image"
    ),
    "upload subfolder": lambda user, _, folder: _upload(
        user, {"overwrite": "true", "subfolder": folder}, "pwned.png", _png(), "/upload/image"
    ),
    "upload subfolder, output": lambda user, _, folder: _upload(
        user, {"type": "output", "subfolder": folder}, "pwned.png", _png(), "/api/upload/image"
    ),
    "mask original": lambda user, file, _: _upload(
        user,
        {"original_ref": json.dumps({"filename": file, "type": "output"})},
        "mask.png",
        _png(),
        "/upload/mask",
    ),
    "mask original subfolder": lambda user, _, folder: _upload(
        user,
        {"original_ref": json.dumps({"filename": "secret.png", "subfolder": folder})},
        "mask.png",
        _png(),
        "/upload/mask",
    ),
    "user header": lambda _, __, folder: Request("GET", "/userdata?dir=.", {"comfy-user": folder}),
    "user header, settings": lambda _, file, __: Request("POST", "/settings", {"comfy-user": file}, b"{}"),
}

NOT_NAMES = {("setting get", "symlink"), ("setting post", "symlink")}
"""A setting id is a key in a file, not a path: `link.png` is a valid id (the battery checks only
that nothing leaks or changes for it)."""

LINK_ROUTES = set(URL_ROUTES) - {"model folder", "setting get", "setting post"} | {
    "upload file name",
    "upload subfolder",
    "upload subfolder, output",
    "mask original",
    "mask original subfolder",
}
"""Routes whose folder holds the links (a model folder or setting id named `linkdir` does not exist)."""
PLAIN_NAMES = {("upload file name", "symlinked_folder")}
"""An upload's file name may not name a folder at all (folders go in `subfolder`): refused before any
link is looked at."""

CASES = [
    pytest.param(route, form, URL_FORMS[form], URL_ROUTES[route], id=f"{route}-{form}")
    for route in URL_ROUTES
    for form in URL_FORMS
] + [
    pytest.param(route, form, TEXT_FORMS[form], TEXT_ROUTES[route], id=f"{route}-{form}")
    for route in TEXT_ROUTES
    for form in TEXT_FORMS
]


@pytest.mark.parametrize(("route", "form_name", "form", "build"), CASES)
def test_no_name_leaves_its_folder(
    target: Target, route: str, form_name: str, form: Form, build: Build
) -> None:
    secret = target.outside / "secret.png"
    climb = "../" * target.depth
    file, folder = climb + os.path.relpath(secret, "/"), climb + os.path.relpath(target.outside, "/")
    request = build(target.user, form(file, secret), form(folder, target.outside))
    before = target.snapshot()
    count = len(target.seen)

    reply = raw_request(target.server.url, request.method, request.target, request.headers, request.body)

    assert MARKER.encode() not in reply.body
    assert target.snapshot() == before, "the folder outside was changed"
    if (route, form_name) in NOT_NAMES:
        return
    if reply.status == 400 and len(target.seen) == count:
        return  # refused by the HTTP parser itself (a NUL in a header), before any route ran
    assert target.seen[count:] == [request.target], "the server did not receive the target as sent"
    assert reply.status in (400, 403, 404), (reply.status, reply.body[:300])
    if form_name.startswith("sym") and route in LINK_ROUTES and (route, form_name) not in PLAIN_NAMES:
        assert reply.status == 403, (reply.status, reply.body[:300])  # refused for where the link leads
    assert reply.headers["content-type"].startswith("application/json")
    assert json.loads(reply.body)["error"]


def test_the_served_folders_do_serve_plain_names(target: Target) -> None:
    """The battery's refusals are not a server refusing everything: the same routes serve a plain name."""
    headers = {"comfy-user": target.user}
    upload = TEXT_ROUTES["upload file name"](target.user, "fine.png", "")
    uploaded = raw_request(target.server.url, upload.method, upload.target, upload.headers, upload.body)
    assert uploaded.status == 200, uploaded.body
    for path in (
        "/view?type=input&filename=fine.png",
        "/userdata/mine.json",
        "/userdata?dir=.",
        f"/extensions/{WEB_PACKAGE}/ok.js",
        "/models/checkpoints",
        "/settings/Comfy.TutorialCompleted",
    ):
        assert raw_request(target.server.url, "GET", path, headers).status == 200, path


def test_a_link_loop_is_refused_not_a_server_error(target: Target, tmp_path: Path) -> None:
    output = target.server.service.settings.base_dir / "output"
    (output / "loop-a").symlink_to(output / "loop-b")
    (output / "loop-b").symlink_to(output / "loop-a")
    reply = raw_request(target.server.url, "GET", "/view?filename=loop-a", {})
    assert reply.status in (400, 403, 404), reply.body
