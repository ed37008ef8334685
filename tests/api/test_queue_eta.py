"""A queued request's expected wait: its queue position and the measured run times of its endpoint.

The expectation is worked out here from the finished requests' own reported inference times (the
median of the endpoint's runs, times the runs ahead of it plus its own, on the one embedded worker).
"""

from __future__ import annotations

import statistics
import time

import httpx

from tests.api.conftest import LiveServer


def _finished(client: httpx.Client, request_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while (body := client.get(f"/v2/requests/{request_id}").json())["status"] != "COMPLETED":
        assert time.monotonic() < deadline, body
        time.sleep(0.02)
    return body


def _running(client: httpx.Client, request_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get(f"/v2/requests/{request_id}/status").json()["status"] != "PROCESSING":
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_queued_request_is_told_its_expected_wait(server: LiveServer) -> None:
    with server.client() as client:
        first = client.post("/v2/slow", json={"seconds": 0.2}).json()["request_id"]
        waiting = client.get(f"/v2/requests/{first}/status").json()
        assert waiting["status"] != "QUEUED" or waiting["eta_seconds"] is None  # nothing measured yet
        runs = [_finished(client, first)["metrics"]["inference_time"]]
        second = client.post("/v2/slow", json={"seconds": 0.4}).json()["request_id"]
        runs.append(_finished(client, second)["metrics"]["inference_time"])

        blocker = client.post("/v2/slow", json={"seconds": 3}).json()["request_id"]
        _running(client, blocker)
        ahead = client.post("/v2/slow", json={"seconds": 0}).json()["request_id"]
        last = client.post("/v2/slow", json={"seconds": 0}).json()["request_id"]
        fal = client.post("/fal-ai/aura-flow", json={"prompt": "x"}).json()

        status = client.get(f"/v2/requests/{last}/status").json()
        assert status["status"] == "QUEUED" and status["queue_position"] == 1
        assert status["eta_seconds"] == round((1 + 1) * statistics.median(runs), 2)
        assert client.get(f"/v2/requests/{ahead}/status").json()["eta_seconds"] == round(
            statistics.median(runs), 2
        )
        fal_status = client.get(fal["status_url"]).json()
        assert fal_status["status"] == "IN_QUEUE" and fal_status["queue_position"] == 2
        assert fal_status["eta_seconds"] is None  # aura-flow has not run here yet
        for request_id in (blocker, ahead, last):
            client.post(f"/v2/requests/{request_id}/cancel")
        client.put(fal["cancel_url"])
