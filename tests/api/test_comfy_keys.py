"""On a server with keys, ComfyUI's routes show and touch only the caller's own prompts: another key's
are absent from /history, /queue and /api/jobs, cannot be deleted, cancelled or interrupted, and its
websocket hears nothing of them, even when it connects with the other client's clientId.
"""

from __future__ import annotations

import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from tests.api.comfy_client import ComfyClient, texts
from tests.api.conftest import LiveServer
from tests.api.test_comfy_queue import slow


def test_another_keys_prompts_are_invisible_and_untouchable(keyed_server: tuple[LiveServer, str]) -> None:
    live, secret = keyed_server
    _, other_secret = live.service.keys.add_key("other", credits=10, rate_per_minute=600)
    mine = ComfyClient(live.url, key=secret)
    with mine, ComfyClient(live.url, key=other_secret, client_id=mine.client_id) as other:
        done = mine.queue(slow(0, color=60))
        mine.until_done(done)
        running = mine.queue(slow(60, color=61))
        mine.until_running(running, "2")
        pending = mine.queue(slow(0, color=62))

        http = other.http
        assert http.get("/history").json() == {} and other.history(done) == {}
        assert http.get("/api/jobs").json() == {
            "jobs": [],
            "pagination": {"offset": 0, "limit": None, "total": 0, "has_more": False},
        }
        assert http.get(f"/api/jobs/{done}").status_code == 404
        assert http.get("/queue").json() == {"queue_running": [], "queue_pending": []}
        http.post("/queue", json={"delete": [pending]})
        http.post("/queue", json={"clear": True})
        http.post("/interrupt")
        http.post("/interrupt", json={"prompt_id": running})
        http.post("/history", json={"delete": [done]})
        http.post("/history", json={"clear": True})
        assert http.post(f"/api/jobs/{running}/cancel").json() == {"cancelled": False}
        assert http.post("/api/jobs/cancel", json={"job_ids": [pending]}).json() == {"cancelled": False}
        taken = other.queue_prompt(slow(0, color=63), prompt_id=done)
        assert taken.status_code == 400 and taken.json()["error"]["type"] == "invalid_prompt_id"

        queue = mine.http.get("/queue").json()
        assert [item[1] for item in queue["queue_running"]] == [running]
        assert [item[1] for item in queue["queue_pending"]] == [pending]
        assert list(mine.http.get("/history").json()) == [done]

        own = other.queue(slow(0, color=64))
        mine.http.post("/interrupt")
        heard = {data.get("prompt_id") for _, data in texts(other.until_done(own))}
        assert heard == {None, own}  # not a word of the other key's three prompts
        assert list(http.get("/history").json()) == [own]
        mine.until_done(pending)
    assert httpx.get(f"{live.url}/history/{done}", headers={"x-api-key": secret}).json()[done]


def test_the_routes_and_the_websocket_need_a_key(keyed_server: tuple[LiveServer, str]) -> None:
    live, _ = keyed_server
    assert httpx.post(f"{live.url}/prompt", json={"prompt": slow(0)}).status_code == 401
    for path in ("/queue", "/history", "/api/jobs", "/prompt"):
        assert httpx.get(f"{live.url}{path}").status_code == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(live.url.replace("http://", "ws://") + "/ws?clientId=x", legacy=True)
    assert refused.value.response.status_code == 401
