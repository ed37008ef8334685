"""The fal-style queue as fal's clients drive it: submit, status with logs and position, result, cancel."""

from __future__ import annotations

import time

import httpx

from tests.api.conftest import LiveServer


def fal_client(server: LiveServer, secret: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Key {secret}"}, timeout=120)


def test_queue_submit_status_logs_result(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with fal_client(server, secret) as client:
        blocker = client.post("/v2/slow", json={"seconds": 1.0}).json()  # keeps the worker busy for a while
        submitted = client.post(
            "/fal-ai/aura-flow", json={"prompt": "an iguana", "num_inference_steps": 2, "seed": 7}
        )
        assert submitted.status_code == 200, submitted.text
        body = submitted.json()
        assert set(body) >= {"request_id", "status_url", "response_url", "cancel_url", "queue_position"}
        assert body["status_url"] == f"{server.url}/fal-ai/aura-flow/requests/{body['request_id']}/status"
        queued = client.get(body["status_url"])
        assert queued.status_code == 202 and queued.json()["status"] == "IN_QUEUE"
        assert queued.json()["queue_position"] == 0
        deadline = time.monotonic() + 300
        while (status := client.get(body["status_url"], params={"logs": 1}).json())["status"] != "COMPLETED":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert any("KSampler" in line["message"] for line in status["logs"])
        result = client.get(body["response_url"]).json()
        assert result["seed"] == 7 and result["prompt"] == "an iguana"
        image = result["images"][0]
        assert (image["width"], image["height"], image["content_type"]) == (1024, 1024, "image/png")
        assert httpx.get(image["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"
        assert blocker["request_id"]


def test_validation_errors_are_fastapi_style_422(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with fal_client(server, secret) as client:
        response = client.post("/fal-ai/aura-flow", json={"num_images": 99})
        assert response.status_code == 422
        locations = {tuple(item["loc"]) for item in response.json()["detail"]}
        assert ("body", "prompt") in locations and ("body", "num_images") in locations


def test_cancel_before_it_runs(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with fal_client(server, secret) as client:
        client.post("/v2/slow", json={"seconds": 2})
        body = client.post("/fal-ai/aura-flow", json={"prompt": "x"}).json()
        cancel = client.put(body["cancel_url"])
        assert cancel.status_code == 202 and cancel.json() == {"status": "CANCELLATION_REQUESTED"}
        assert client.get(body["status_url"]).json()["status"] == "COMPLETED"
        result = client.get(body["response_url"])
        assert result.status_code == 400 and result.json()["detail"] == "Request was cancelled"
        assert client.put(body["cancel_url"]).json() == {"status": "ALREADY_COMPLETED"}


def test_requests_are_only_found_under_their_own_app(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with fal_client(server, secret) as client:
        segmind_job = client.post("/v2/solid-color", json={}).json()
        assert client.get(f"/fal-ai/aura-flow/requests/{segmind_job['request_id']}/status").status_code == 404
        assert client.post("/fal-ai/no-such-app", json={}).status_code == 404
