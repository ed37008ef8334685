"""Absolute URLs in responses point at the server's own address or its configured public URL, never at
whatever Host header a client sent (which would send other readers of the job elsewhere)."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx

from engine.settings import Settings
from tests.api.conftest import LiveServer


def forging_client(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Host": "evil.example"}, timeout=60)


def test_urls_use_the_bound_address_whatever_the_host_header(server: LiveServer) -> None:
    with forging_client(server) as client:
        submitted = client.post("/v2/solid-color", json={}).json()
        job = f"{server.url}/v2/requests/{submitted['request_id']}"
        assert (submitted["status_url"], submitted["response_url"]) == (f"{job}/status", job)
        deadline = time.monotonic() + 60
        while (result := client.get(f"/v2/requests/{submitted['request_id']}").json())[
            "status"
        ] != "COMPLETED":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert result["output"].startswith(f"{server.url}/files/{submitted['request_id']}/")
        assert client.get("/openapi.json").json()["servers"] == [{"url": server.url}]


def test_urls_use_the_configured_public_url(settings: Settings) -> None:
    public = replace(settings, open_access=True, public_url="https://images.example.com/api/")
    with LiveServer(public) as server, forging_client(server) as client:
        submitted = client.post("/v2/solid-color", json={}).json()
        expected = f"https://images.example.com/api/v2/requests/{submitted['request_id']}/status"
        assert submitted["status_url"] == expected
        spec = client.get("/openapi.json").json()
        assert spec["servers"] == [{"url": "https://images.example.com/api"}]
