"""A webhook URL the server would refuse to call is refused at submit, naming the parameter it came in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from engine.settings import Settings
from tests.api.conftest import LiveServer

REFUSED = [
    "http://127.0.0.1:9/hook",
    "http://127.1:9/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://0177.0.0.1/hook",
    "http://[::127.0.0.1]/hook",
    "http://[64:ff9b::7f00:1]/hook",
    "http://[::ffff:169.254.169.254]/latest/meta-data",
    "http://[2002:7f00:1::]/hook",
    "http://localhost:9/hook",  # a name resolving to loopback
]


@pytest.fixture
def strict_server(settings: Settings) -> Iterator[LiveServer]:
    """Private webhook targets refused, as in production (the shared fixture allows them)."""
    with LiveServer(replace(settings, allow_private_webhooks=False, open_access=True)) as live:
        yield live


@pytest.mark.parametrize("target", REFUSED)
def test_segmind_refuses_private_targets_with_400(strict_server: LiveServer, target: str) -> None:
    with strict_server.client() as client:
        response = client.post("/v2/solid-color", params={"webhook": target}, json={})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["field"] == "webhook" and "is not a public address" in body["error"]
        assert "x-request-id" not in response.headers  # nothing was queued


def test_segmind_names_the_header_it_came_in(strict_server: LiveServer) -> None:
    with strict_server.client() as client:
        response = client.post("/v1/solid-color", headers={"x-webhook-url": "http://localhost/"}, json={})
        assert response.status_code == 400 and response.json()["field"] == "x-webhook-url"


def test_fal_refuses_private_targets_with_422(strict_server: LiveServer) -> None:
    with strict_server.client() as client:
        response = client.post(
            "/fal-ai/aura-flow", params={"fal_webhook": "http://127.1:9/hook"}, json={"prompt": "x"}
        )
        assert response.status_code == 422, response.text
        (detail,) = response.json()["detail"]
        assert detail["loc"] == ["query", "fal_webhook"] and "127.0.0.1 is loopback" in detail["msg"]


def test_a_name_that_does_not_resolve_yet_is_accepted(strict_server: LiveServer) -> None:
    """It cannot be judged now; each delivery attempt judges it again."""
    with strict_server.client() as client:
        response = client.post("/v2/solid-color", params={"webhook": "https://hooks.invalid/x"}, json={})
        assert response.status_code == 200, response.text
