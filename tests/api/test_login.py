"""Signing in to the editor with an API key: the session cookie stands for the key in a browser."""

from __future__ import annotations

import re
import ssl
from dataclasses import replace
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from engine.api.login import LOGIN_ATTEMPTS_PER_MINUTE
from engine.api.sessions import COOKIE, SESSION_SECONDS, Sessions
from engine.settings import Settings
from tests.api.conftest import LiveServer
from tests.api.test_fal_client import Chain, make_chain

EDITOR_FILES = ["/assets/favicon.ico", "/scripts/api.js", "/templates/index.json", "/docs/KSampler/en.md"]
COMFY_API = [("GET", "/api/object_info"), ("GET", "/object_info"), ("POST", "/api/prompt"), ("GET", "/ws")]
"""ComfyUI's own routes the editor calls (served by engine.api.comfy)."""


def log_in(client: httpx.Client, secret: str) -> httpx.Response:
    return client.post("/login", data={"key": secret})


def set_cookie(response: httpx.Response) -> SimpleCookie:
    cookie = SimpleCookie()
    cookie.load(response.headers["set-cookie"])
    return cookie


def test_the_sign_in_page_is_a_self_contained_form(keyed_server: tuple[LiveServer, str]) -> None:
    server, _ = keyed_server
    with server.client() as client:
        response = client.get("/login")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert re.search(r'<form method="post" action="/login">', page)
    assert re.search(r'<input[^>]+name="key"[^>]+type="password"', page)
    # nothing loaded from anywhere: every src/href is inline data
    assert all(url.startswith("data:") for url in re.findall(r'(?:src|href)="([^"]*)"', page))
    assert "<script" not in page
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "form-action 'self'" in policy
    assert response.headers["cache-control"] == "no-store"


def test_signing_in_sets_a_strict_http_only_session_cookie(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client() as client:
        response = log_in(client, secret)
    assert response.status_code == 303 and response.headers["location"] == "/"
    morsel = set_cookie(response)[COOKIE]
    assert morsel.value and secret not in morsel.value  # a token, never the key itself
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Strict"
    assert morsel["path"] == "/"
    assert int(morsel["max-age"]) == SESSION_SECONDS
    assert not morsel["secure"]  # plain HTTP: a Secure cookie would never come back


def test_the_cookie_is_secure_over_tls(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "tls").mkdir()
    chain: Chain = make_chain(tmp_path / "tls")
    with LiveServer(replace(settings, tls_cert=chain.cert, tls_key=chain.key)) as server:
        _, secret = server.service.keys.add_key("tls", credits=1, rate_per_minute=60)
        with server.client(verify=ssl.create_default_context(cafile=chain.ca)) as client:
            response = log_in(client, secret)
    assert response.status_code == 303
    assert set_cookie(response)[COOKIE]["secure"] is True


def test_the_cookie_is_secure_behind_an_https_public_url(settings: Settings) -> None:
    """A TLS-terminating proxy: the browser speaks https to it, the proxy plain HTTP to the server."""
    with LiveServer(replace(settings, public_url="https://engine.example")) as server:
        _, secret = server.service.keys.add_key("proxied", credits=1, rate_per_minute=60)
        with server.client() as client:
            response = log_in(client, secret)
    assert set_cookie(response)[COOKIE]["secure"] is True


def test_a_signed_in_browser_reaches_the_editor(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client() as client:
        log_in(client, secret)
        page = client.get("/")
        files = [client.get(path) for path in EDITOR_FILES]
    assert page.status_code == 200 and "<title>ComfyUI</title>" in page.text
    assert [response.status_code for response in files] == [200] * len(EDITOR_FILES)


def test_without_a_session_the_editor_redirects_and_its_files_answer_401(
    keyed_server: tuple[LiveServer, str],
) -> None:
    server, _ = keyed_server
    with server.client() as client:
        page = client.get("/")
        files = [client.get(path) for path in EDITOR_FILES]
    assert page.status_code == 303 and page.headers["location"] == "/login"
    for response in files:
        assert response.status_code == 401
        assert "/login" in response.json()["error"]


@pytest.mark.parametrize(("method", "path"), COMFY_API)
def test_without_a_session_comfyui_routes_answer_401(
    keyed_server: tuple[LiveServer, str], method: str, path: str
) -> None:
    server, _ = keyed_server
    with server.client() as client:
        response = client.request(method, path, json={})
    assert response.status_code == 401
    assert "sign in at /login" in response.json()["error"]


def test_a_session_authenticates_the_api_as_its_key(keyed_server: tuple[LiveServer, str]) -> None:
    """The cookie stands for the key on every private route, posts included (same-origin ones)."""
    server, secret = keyed_server
    with server.client() as client:
        log_in(client, secret)
        job = client.post("/v2/solid-color", json={}, headers={"Origin": server.url})
        status = client.get(f"/v2/requests/{job.json()['request_id']}/status")
    assert job.status_code == 200 and status.status_code == 200
    assert float(job.headers["x-remaining-credits"]) < 10


def test_a_revoked_keys_sessions_stop_working(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    (key,) = server.service.keys.list_keys()
    with server.client() as client:
        log_in(client, secret)
        assert client.get("/templates/index.json").status_code == 200
        assert server.service.keys.revoke_key(key.id)
        api = client.get("/templates/index.json")
        page = client.get("/")
    assert api.status_code == 401 and "revoked" in api.json()["error"]
    assert page.status_code == 303 and page.headers["location"] == "/login"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "s1.key_000000000000.9999999999.nonce.forged",
        "....",
        "s1.key_x.not-a-number.n.sig",
        "é" * 40,
        "x" * 5000,
    ],
)
def test_a_forged_or_malformed_cookie_is_no_session(keyed_server: tuple[LiveServer, str], token: str) -> None:
    server, _ = keyed_server
    cookie = {"Cookie": f"{COOKIE}={token}".encode()}
    with server.client() as client:
        api = client.get("/templates/index.json", headers=cookie)
        page = client.get("/", headers=cookie)
    assert api.status_code == 401
    assert page.status_code == 303


def test_a_cookie_altered_to_name_another_key_is_refused(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    other, _ = server.service.keys.add_key("other", credits=1000, rate_per_minute=60)
    with server.client() as client:
        token = set_cookie(log_in(client, secret))[COOKIE].value
    version, _, *rest = token.split(".")
    altered = ".".join([version, other.id, *rest])
    with server.client() as client:
        genuine = client.get("/templates/index.json", headers={"Cookie": f"{COOKIE}={token}"})
        response = client.get("/templates/index.json", headers={"Cookie": f"{COOKIE}={altered}"})
    assert genuine.status_code == 200
    assert response.status_code == 401


def test_sessions_expire() -> None:
    now = [1_000_000.0]
    sessions = Sessions(b"secret", clock=lambda: now[0])
    token = sessions.issue("key_abc")
    now[0] += SESSION_SECONDS - 1
    assert sessions.key_id(token) == "key_abc"
    now[0] += 1
    assert sessions.key_id(token) is None
    assert Sessions(b"another secret").key_id(sessions.issue("key_abc")) is None


def test_a_wrong_key_shows_the_form_again_with_an_error(keyed_server: tuple[LiveServer, str]) -> None:
    server, _ = keyed_server
    with server.client() as client:
        response = log_in(client, "sk_wrong")
    assert response.status_code == 401
    assert "not valid" in response.text and 'name="key"' in response.text
    assert "set-cookie" not in response.headers


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/x-www-form-urlencoded"),
        (b"key=", "application/x-www-form-urlencoded"),
        (b"other=1", "application/x-www-form-urlencoded"),
        (b"key=" + b"k" * 5000, "application/x-www-form-urlencoded"),
        (b'{"key": 12}', "application/json"),
        (b'{"key": ["a"]}', "application/json"),
        (b"key=%FF%FE", "application/x-www-form-urlencoded"),
        (b"{not json", "application/json"),
    ],
)
def test_hostile_sign_in_bodies_get_a_4xx(
    keyed_server: tuple[LiveServer, str], body: bytes, content_type: str
) -> None:
    server, _ = keyed_server
    with server.client() as client:
        response = client.post("/login", content=body, headers={"content-type": content_type})
    assert 400 <= response.status_code < 500
    assert "set-cookie" not in response.headers


def test_sign_in_attempts_are_rate_limited(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client() as client:
        wrong = [log_in(client, f"sk_guess{n}").status_code for n in range(LOGIN_ATTEMPTS_PER_MINUTE)]
        limited = log_in(client, secret)  # even the right key waits now
    assert wrong == [401] * LOGIN_ATTEMPTS_PER_MINUTE
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert "Too many sign-in attempts" in limited.text
    assert "set-cookie" not in limited.headers


def test_signing_out_deletes_the_cookie(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client() as client:
        log_in(client, secret)
        response = client.post("/logout")
        page = client.get("/")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    morsel = set_cookie(response)[COOKIE]
    assert morsel.value == "" and int(morsel["max-age"]) == 0
    assert page.status_code == 303  # the client dropped the cookie, as a browser does


def test_with_open_access_there_is_nothing_to_sign_in_to(server: LiveServer) -> None:
    with server.client() as client:
        page = client.get("/login")
        posted = log_in(client, "anything")
        editor = client.get("/")
    assert page.status_code == 303 and page.headers["location"] == "/"
    assert posted.status_code == 303 and "set-cookie" not in posted.headers
    assert editor.status_code == 200
