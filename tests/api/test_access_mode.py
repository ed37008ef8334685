"""Keys are required unless the operator starts the server with --open-access; nothing else opens it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from engine.cli import build_parser
from engine.cli.settings_args import settings_from
from engine.settings import Settings
from tests.api.conftest import REPO, LiveServer

NO_KEYS_HINT = "`engine keys add NAME`, or restarts it with `engine serve --open-access`"


def test_revoking_the_last_key_closes_the_api(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client(secret) as client:
        job = client.post("/v2/solid-color", json={}).json()
    (key,) = server.service.keys.list_keys()
    assert server.service.keys.revoke_key(key.id)
    path = f"/v2/requests/{job['request_id']}"
    with server.client() as anonymous:
        response = anonymous.get(path)
        assert response.status_code == 401 and NO_KEYS_HINT in response.json()["error"]
    with server.client(secret) as revoked:
        response = revoked.get(path)
        assert response.status_code == 401 and "not valid" in response.json()["error"]


def test_without_keys_or_the_flag_private_routes_answer_401(settings: Settings) -> None:
    with LiveServer(settings) as server, server.client() as client:
        response = client.post("/v1/solid-color", json={})
        assert response.status_code == 401 and NO_KEYS_HINT in response.json()["error"]
        assert client.get("/health").status_code == 200  # public routes stay public


def test_with_keys_the_401_does_not_suggest_open_access(keyed_server: tuple[LiveServer, str]) -> None:
    server, _ = keyed_server
    with server.client() as client:
        response = client.post("/v1/solid-color", json={})
        assert response.status_code == 401 and "open-access" not in response.json()["error"]


def test_open_access_needs_no_key_even_when_keys_exist(settings: Settings) -> None:
    with LiveServer(replace(settings, open_access=True)) as server, server.client() as client:
        server.service.keys.add_key("unused", credits=1, rate_per_minute=1)
        assert client.post("/v1/solid-color", json={}).status_code == 200


def serve_settings(argv: list[str]) -> Settings:
    return settings_from(build_parser().parse_args(["--custom-nodes", "custom_nodes", "serve", *argv]))


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        ([], None, False),
        (["--open-access"], None, True),
        ([], "1", True),
        ([], "true", True),
        ([], "0", False),
        ([], "", False),
        (["--open-access"], "off", True),
    ],
)
def test_open_access_only_when_the_operator_says_so(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: str | None, expected: bool
) -> None:
    if env is None:
        monkeypatch.delenv("ENGINE_OPEN_ACCESS", raising=False)
    else:
        monkeypatch.setenv("ENGINE_OPEN_ACCESS", env)
    assert serve_settings(argv).open_access is expected


def test_an_unreadable_switch_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_OPEN_ACCESS", "maybe")
    with pytest.raises(SystemExit, match="ENGINE_OPEN_ACCESS='maybe' is not a switch"):
        serve_settings([])


def test_engine_serve_with_open_access_listens_on_localhost_only(tmp_path: Path, test_models: Path) -> None:
    """The real command: asked for every interface, it binds 127.0.0.1, and its URLs say so."""
    command = [sys.executable, "-m", "engine", "--base-dir", str(tmp_path), "--models-dir", str(test_models)]
    command += ["serve", "--graphs", str(REPO / "graphs"), "--host", "0.0.0.0", "--port", "0"]
    command += ["--open-access", "--no-test-models", "--warmup"]
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, cwd=REPO, env=environment, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(180, process.kill)
    watchdog.start()
    try:
        assert process.stderr is not None
        log = []
        while not (match := re.search(r"listening on (\S+);", log[-1] if log else "")):
            line = process.stderr.readline()
            assert line, "engine serve stopped before listening:\n" + "".join(log)
            log.append(line)
        url = match.group(1)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert "binding to 127.0.0.1 only (not 0.0.0.0)" in "".join(log)
        assert "OPEN ACCESS" in "".join(log)
        spec = httpx.get(f"{url}/openapi.json", headers={"Host": "evil.example"}, timeout=30).json()
        assert spec["servers"] == [{"url": url}]
    finally:
        watchdog.cancel()
        process.terminate()
        process.wait(30)
