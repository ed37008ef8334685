"""A page on another site cannot make a browser change state here: cross-origin writes answer 403."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from urllib.parse import urlsplit

import aiohttp
import pytest

from engine.settings import Settings
from tests.api.conftest import LiveServer

FOREIGN = "http://evil.example"
SUBMIT = "/v2/solid-color"
"""A state-changing route every server here has (Segmind's asynchronous submit)."""


def port(server: LiveServer) -> int:
    value = urlsplit(server.url).port
    assert value is not None
    return value


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": FOREIGN},
        {"Origin": "null"},  # a sandboxed frame, a file:// page
        {"Origin": "https://127.0.0.1"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another port or subdomain of the same site
        {"Origin": "http://127.0.0.1:1"},
        {"Origin": "ftp://127.0.0.1"},
        {"Origin": "http://127.0.0.1:99999999"},
        {"Origin": "http://[::1"},
        {"Origin": "http://evil.example@127.0.0.1"},
        {"Origin": ""},
    ],
)
def test_a_cross_origin_post_is_refused(server: LiveServer, headers: dict[str, str]) -> None:
    with server.client() as client:
        response = client.post(SUBMIT, json={}, headers=headers)
    assert response.status_code == 403
    assert "cross-origin POST request refused" in response.json()["error"]
    assert server.call(server.service.store.queue_depth()) == 0


def test_the_message_names_the_origin_and_the_servers_own(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post(SUBMIT, json={}, headers={"Origin": FOREIGN})
    message = response.json()["error"]
    assert FOREIGN in message and server.url in message


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_every_state_changing_method_is_checked(server: LiveServer, method: str) -> None:
    with server.client() as client:
        response = client.request(
            method, "/fal-ai/solid-color/requests/x/cancel", headers={"Origin": FOREIGN}
        )
    assert response.status_code == 403


def test_a_same_origin_post_is_allowed(server: LiveServer) -> None:
    with server.client() as client:
        own = client.post(SUBMIT, json={}, headers={"Origin": server.url, "Sec-Fetch-Site": "same-origin"})
        upper_case = client.post(SUBMIT, json={}, headers={"Origin": server.url.upper()})
    assert own.status_code == 200 and upper_case.status_code == 200


def test_a_post_without_origin_is_allowed(server: LiveServer) -> None:
    """curl, SDKs and every other program that is not a browser send no Origin."""
    with server.client() as client:
        response = client.post(SUBMIT, json={})
    assert response.status_code == 200


def test_the_origin_the_request_was_addressed_to_counts_as_own(server: LiveServer) -> None:
    """The editor opened as localhost while the server's base URL says 127.0.0.1: the Host matches."""
    alias = f"localhost:{port(server)}"
    with server.client() as client:
        allowed = client.post(SUBMIT, json={}, headers={"Host": alias, "Origin": f"http://{alias}"})
        refused = client.post(
            SUBMIT, json={}, headers={"Host": alias, "Origin": f"http://localhost:{port(server) + 1}"}
        )
    assert allowed.status_code == 200
    assert refused.status_code == 403


def test_the_public_url_counts_as_own(settings: Settings) -> None:
    """Behind a proxy the browser's Origin is the public URL, whatever Host the proxy forwards."""
    proxied = replace(settings, open_access=True, public_url="https://engine.example")
    with LiveServer(proxied) as server, server.client() as client:
        allowed = client.post(SUBMIT, json={}, headers={"Origin": "https://engine.example:443"})
        refused = client.post(SUBMIT, json={}, headers={"Origin": "http://engine.example"})
    assert allowed.status_code == 200 and refused.status_code == 403


def test_reads_are_not_checked(server: LiveServer) -> None:
    with server.client() as client:
        response = client.get("/health", headers={"Origin": FOREIGN, "Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 200


def test_a_cookie_authenticated_cross_origin_post_is_refused(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client() as client:
        client.post("/login", data={"key": secret})
        forged = client.post(SUBMIT, json={}, headers={"Origin": FOREIGN})
        own = client.post(SUBMIT, json={}, headers={"Origin": server.url})
    assert forged.status_code == 403
    assert own.status_code == 200


def test_a_key_header_does_not_lift_the_check(keyed_server: tuple[LiveServer, str]) -> None:
    """A browser sends a key header cross-origin only after a CORS preflight, which is never granted."""
    server, secret = keyed_server
    with server.client(secret) as client:
        response = client.post(SUBMIT, json={}, headers={"Origin": FOREIGN})
    assert response.status_code == 403


def test_a_cross_site_sign_in_is_refused(keyed_server: tuple[LiveServer, str]) -> None:
    """Login CSRF: another site must not sign a browser in with the attacker's key."""
    server, secret = keyed_server
    with server.client() as client:
        response = client.post("/login", data={"key": secret}, headers={"Origin": FOREIGN})
    assert response.status_code == 403 and "set-cookie" not in response.headers


async def _handshake(url: str, origin: str | None) -> int:
    """The status a websocket handshake gets (101 when it opens)."""
    async with aiohttp.ClientSession() as session:
        try:
            async with session.ws_connect(url, origin=origin) as ws:
                await ws.close()
                return 101
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status


def test_a_websocket_from_a_foreign_origin_is_refused(server: LiveServer) -> None:
    url = f"{server.url}/ws?clientId=test"
    assert asyncio.run(_handshake(url, FOREIGN)) == 403
    assert asyncio.run(_handshake(url, "null")) == 403


def test_a_websocket_from_the_servers_own_origin_or_no_browser_passes_the_check(server: LiveServer) -> None:
    """Not refused by the origin check: 101 where the route exists (ComfyUI's /ws)."""
    url = f"{server.url}/ws?clientId=test"
    assert asyncio.run(_handshake(url, server.url)) != 403
    assert asyncio.run(_handshake(url, None)) != 403
