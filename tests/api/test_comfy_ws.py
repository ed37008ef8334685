"""The /ws handshake and routing as ComfyUI's server does them: `status` with the sid first, a
`feature_flags` answer to the first message only, `status` to every client when the queue changes and
a prompt's messages only to its own client; and an upgrade from another site's page refused (403).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect
from websockets.typing import Origin

from tests.api.comfy_client import ComfyClient, Frame, texts
from tests.api.conftest import LiveServer
from tests.api.test_comfy_queue import slow


def ws_url(server: LiveServer, query: str = "") -> str:
    return server.url.replace("http://", "ws://", 1) + "/ws" + query


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://127.0.0.1:1", "http://localhost.evil.example", "file://"],
)
def test_an_upgrade_from_another_origin_is_refused(server: LiveServer, origin: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(server, "?clientId=a"), origin=Origin(origin), legacy=True)
    assert refused.value.response.status_code == 403


def test_an_upgrade_from_this_servers_page_or_no_browser_is_accepted(server: LiveServer) -> None:
    for origin in (Origin(server.url), None):
        with connect(ws_url(server, "?clientId=a"), origin=origin, legacy=True) as socket:
            assert socket.recv(timeout=10).startswith('{"type": "status"')


def test_connect_status_and_feature_flags(server: LiveServer) -> None:
    with ComfyClient(server.url) as client:
        assert client.connected == (
            "status",
            {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client.client_id},
        )
        client.send("feature_flags", {"supports_preview_metadata": True})
        answer = client.receive(10)
        assert isinstance(answer, tuple)
        kind, flags = answer
        assert kind == "feature_flags" and flags["supports_preview_metadata"] is False
        assert flags["max_upload_size"] == server.settings.max_upload_bytes
        client.send("feature_flags", {})  # only the first message is a negotiation
        assert client.socket is not None
        client.socket.send("not json")
        client.socket.send(b"\x00\x01")
        frames = client.until_done(client.queue(slow(0, color=70)))
    assert "feature_flags" not in [kind for kind, _ in texts(frames)]

    with connect(ws_url(server), legacy=True) as socket:
        assert re.fullmatch(r'\{"type": "status", .*"sid": "[0-9a-f]{32}"\}\}', socket.recv(timeout=10))
    assert httpx.get(f"{server.url}/ws", params={"clientId": "x" * 300}).status_code == 400


def test_queue_status_reaches_everyone_and_a_prompt_only_its_client(server: LiveServer) -> None:
    with ComfyClient(server.url) as owner, ComfyClient(server.url) as bystander:
        prompt_id = owner.queue(slow(0.2, color=71))
        frames = owner.until_done(prompt_id)
        heard = bystander.until(
            lambda frame: frame == ("status", {"status": {"exec_info": {"queue_remaining": 0}}})
        )
    assert {kind for kind, _ in texts(heard)} == {"status"}
    assert [data["status"]["exec_info"]["queue_remaining"] for _, data in texts(heard)][:1] == [1]
    kinds = [kind for kind, _ in texts(frames, prompt_id)]
    assert kinds[:3] == ["execution_start", "execution_cached", "executing"]
    assert {"progress", "progress_state", "executed", "execution_success"} <= set(kinds)
    states = [data for kind, data in texts(frames, prompt_id) if kind == "progress_state"]
    assert states[-1]["nodes"]["2"] == {
        "value": 4,
        "max": 4,
        "state": "finished",
        "node_id": "2",
        "prompt_id": prompt_id,
        "display_node_id": "2",
        "parent_node_id": None,
        "real_node_id": "2",
    }


def succeeded(prompt_id: str) -> Callable[[Frame], bool]:
    return lambda frame: (
        isinstance(frame, tuple) and frame[0] == "execution_success" and (frame[1]["prompt_id"] == prompt_id)
    )


def test_a_prompt_without_client_id_is_heard_by_every_client(server: LiveServer) -> None:
    with ComfyClient(server.url) as one, ComfyClient(server.url) as other:
        response = httpx.post(f"{server.url}/prompt", json={"prompt": slow(0, color=72)})
        prompt_id = response.json()["prompt_id"]
        for client in (one, other):
            frames = client.until(succeeded(prompt_id))
            assert "executed" in [kind for kind, _ in texts(frames, prompt_id)]
