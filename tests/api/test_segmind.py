"""The Segmind-style API as its clients use it: the official SDK, plain HTTP, keys, credits, errors."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from dataclasses import replace

import httpx
import pytest
import segmind
from aiohttp import web
from PIL import Image
from segmind.v2 import InferenceFailed
from standardwebhooks import Webhook, WebhookVerificationError

from engine.jobs.webhooks import new_secret
from tests.api.conftest import LiveServer


def image_of(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def wait_for(client: httpx.Client, request_id: str, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v2/requests/{request_id}/status").json()
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.02)


def wait_for_progress(client: httpx.Client, request_id: str, timeout: float = 30) -> dict:
    """The first step progress a PROCESSING status reports."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/v2/requests/{request_id}/status").json()
        if "progress" in body:
            return body["progress"]
        assert body["status"] == "PROCESSING" and time.monotonic() < deadline, body
        time.sleep(0.02)


# -- the official SDK, pointed at this server by base_url alone ---------------------------------------------


def test_sdk_run_submit_async_and_sync(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    client = segmind.SegmindClient(api_key=secret, base_url=f"{server.url}/v1")

    result = client.run("solid-color", width=40, height=24, color=0xFF0000, output_format="png")
    assert result["status"] == "COMPLETED" and result["metrics"]["inference_time"] > 0
    picture = image_of(httpx.get(result["output"]).content)
    assert picture.size == (40, 24) and picture.convert("RGB").getpixel((0, 0)) == (255, 0, 0)

    job = client.submit_async("solid-color", width=8, height=8, batch=2, output_format="jpg")
    assert job.request_id
    waited = job.wait(timeout=60, interval=0.1)
    assert [image["content_type"] for image in waited["images"]] == ["image/jpeg", "image/jpeg"]

    response = client.run_sync("solid-color", width=30, height=20, output_format="webp", output_quality=50)
    assert response.headers["content-type"] == "image/webp"
    assert image_of(response.content).size == (30, 20)


def test_sdk_failed_job_raises_inference_failed(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    client = segmind.SegmindClient(api_key=secret, base_url=f"{server.url}/v1")
    with pytest.raises(InferenceFailed) as caught:
        client.submit_async("broken").wait(timeout=60, interval=0.1)
    assert "fails on purpose" in caught.value.detail
    assert caught.value.status_body["status"] == "FAILED"


# -- v2 bodies, statuses and codes ---------------------------------------------------------------------------


def test_v2_lifecycle(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client(secret) as client:
        first = client.post("/v2/slow", json={"seconds": 1.0}).json()
        second = client.post("/v2/slow", json={"seconds": 0}).json()
        assert second["status"] == "QUEUED" and second["status_url"].startswith(server.url)
        wait_for(client, first["request_id"], "PROCESSING")
        progress = wait_for_progress(client, first["request_id"])
        assert progress["max"] == 20 and 0 < progress["value"] <= 20  # 1 s in 0.05 s steps
        queued = client.get(f"/v2/requests/{second['request_id']}/status").json()
        assert queued == {
            "request_id": second["request_id"],
            "status": "QUEUED",
            "queue_position": 0,
            "eta_seconds": None,  # no run of this endpoint has finished yet
        }
        assert client.get(second["response_url"]).status_code == 202

        wait_for(client, second["request_id"], "COMPLETED")
        result = client.get(second["response_url"])
        body = result.json()
        assert result.status_code == 200 and body["status"] == "COMPLETED"
        assert isinstance(body["output"], str) and body["metrics"]["inference_time"] >= 0
        assert isinstance(body["seed"], int)
        assert httpx.get(body["output"]).headers["content-type"] == "image/png"


def test_failed_requests_are_served_as_422(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client(secret) as client:
        submitted = client.post("/v2/broken", json={}).json()
        deadline = time.monotonic() + 30
        while (status := client.get(submitted["status_url"])).json()["status"] != "FAILED":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert status.status_code == 422 and "FailingImages" in status.json()["error"]
        result = client.get(submitted["response_url"])
        assert result.status_code == 422 and result.json()["status"] == "FAILED"
        sync = client.post("/v1/broken", json={})
        assert sync.status_code == 500 and "fails on purpose" in sync.json()["error"]


def test_unknown_requests_are_404(server: LiveServer) -> None:
    with server.client() as client:
        assert client.get("/v2/requests/nope/status").status_code == 404
        assert client.get("/v2/requests/nope").status_code == 404
        assert httpx.get(f"{server.url}/files/nope/0").status_code == 404


def test_results_and_files_expire_after_the_retention_period(server: LiveServer) -> None:
    with server.client() as client:
        done = client.post("/v2/solid-color", json={}).json()
        wait_for(client, done["request_id"], "COMPLETED")
        image_url = client.get(done["response_url"]).json()["output"]
        job = server.call(server.service.store.get(done["request_id"]))
        path = server.service.output_path(job.outputs[0])
        assert path.exists() and httpx.get(image_url).status_code == 200
        assert server.call(server.service.expire()) == 0  # within the hour: kept
        server.service.settings = replace(server.service.settings, retention_seconds=0.0)
        assert server.call(server.service.expire()) == 1
        assert not path.exists()
        assert client.get(done["status_url"]).status_code == 404
        assert httpx.get(image_url).status_code == 404


# -- bad input: each error names the field and the bound ---------------------------------------------------


@pytest.mark.parametrize("as_form", [False, True])
def test_out_of_range_and_mistyped_fields(server: LiveServer, as_form: bool) -> None:
    values = (
        {"width": "0", "output_format": "gif", "batch": "two"}
        if as_form
        else {"width": 0, "output_format": "gif"}
    )
    with server.client() as client:
        response = (
            client.post("/v1/solid-color", data=values)
            if as_form
            else client.post("/v1/solid-color", json=values)
        )
        assert response.status_code == 400
        errors = {error["field"]: error for error in response.json()["errors"]}
        assert errors["width"]["minimum"] == 1 and "width" in errors["width"]["message"]
        assert errors["output_format"]["allowed"] == ["webp", "jpg", "png"]
        if as_form:
            assert "batch" in errors
        mistyped = client.post("/v1/solid-color", json={"width": "wide"})
        assert mistyped.status_code == 400 and mistyped.json()["errors"][0]["field"] == "width"


def test_http_errors(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client(secret) as client:
        unknown = client.post("/v1/no-such-model", json={})
        assert unknown.status_code == 404 and "no-such-model" in unknown.json()["error"]
        wrong_method = client.get("/v1/solid-color")
        assert wrong_method.status_code == 405 and "POST" in wrong_method.json()["error"]
        not_json = client.post(
            "/v1/solid-color", content=b"{oops", headers={"content-type": "application/json"}
        )
        assert not_json.status_code == 400
    with server.client("sk_wrong") as client:
        bad = client.post("/v1/solid-color", json={})
        assert bad.status_code == 401 and "not valid" in bad.json()["error"]
    with server.client() as client:
        assert client.post("/v1/solid-color", json={}).status_code == 401


def test_credits_reserved_charged_released_and_short_balance(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server  # 10 credits; slow and broken cost 1 each
    with server.client(secret) as client:
        ok = client.post("/v1/slow", json={"seconds": 0})
        assert ok.status_code == 200
        assert ok.headers["x-request-cost"] == "1" and ok.headers["x-remaining-credits"] == "9"
        failed = client.post("/v1/broken", json={})
        assert (
            failed.status_code == 500 and failed.headers["x-remaining-credits"] == "9"
        )  # released, not charged
        running = [client.post("/v2/slow", json={"seconds": 2}).json() for _ in range(9)]
        short = client.post("/v2/slow", json={"seconds": 0})
        assert short.status_code == 406
        assert short.json()["required"] == 1 and short.json()["available"] == 0
        assert short.headers["x-remaining-credits"] == "0"
        for job in running:
            client.post(f"/v2/requests/{job['request_id']}/cancel")


def test_rate_limit_answers_429_with_retry_after(keyed_server: tuple[LiveServer, str]) -> None:
    server, _ = keyed_server
    _, secret = server.service.keys.add_key("slow-client", credits=10, rate_per_minute=2)
    with server.client(secret) as client:
        assert [client.post("/v2/solid-color", json={}).status_code for _ in range(2)] == [200, 200]
        limited = client.post("/v2/solid-color", json={})
        assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1
        assert "2 requests per minute" in limited.json()["error"]
        assert client.get("/v1/endpoints").status_code == 200  # polling and reading are not limited


def test_requests_of_other_keys_are_invisible(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    _, other = server.service.keys.add_key("other", credits=10, rate_per_minute=60)
    with server.client(secret) as mine, server.client(other) as theirs:
        submitted = mine.post("/v2/solid-color", json={}).json()
        assert theirs.get(f"/v2/requests/{submitted['request_id']}/status").status_code == 404


def test_idempotency_key_returns_the_existing_job(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client(secret) as client:
        headers = {"Idempotency-Key": "order-42"}
        first = client.post("/v2/slow", json={"seconds": 0}, headers=headers)
        again = client.post("/v2/slow", json={"seconds": 0}, headers=headers)
        assert again.json()["request_id"] == first.json()["request_id"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert server.service.keys.key(server.service.keys.authenticate(secret).id).reserved <= 1


def test_cancel_queued_and_running_jobs(keyed_server: tuple[LiveServer, str]) -> None:
    server, secret = keyed_server
    with server.client(secret) as client:
        running = client.post("/v2/slow", json={"seconds": 30}).json()
        queued = client.post("/v2/slow", json={"seconds": 30}).json()
        wait_for(client, running["request_id"], "PROCESSING")
        assert client.post(f"/v2/requests/{queued['request_id']}/cancel").json()["status"] == "CANCELLED"
        client.post(f"/v2/requests/{running['request_id']}/cancel")
        cancelled = wait_for(client, running["request_id"], "FAILED", timeout=10)
        assert "cancelled" in cancelled["error"]
        assert client.post(f"/v2/requests/{running['request_id']}/cancel").status_code == 409
        key = server.service.keys.authenticate(secret)
        assert key.balance == 10 and key.reserved == 0


def test_progress_stream(server: LiveServer) -> None:
    with server.client() as client:
        submitted = client.post("/v2/slow", json={"seconds": 0.5}).json()
        events = []
        with client.stream("GET", f"/v2/requests/{submitted['request_id']}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            name = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    name = line.removeprefix("event: ")
                elif line.startswith("data: "):
                    events.append((name, json.loads(line.removeprefix("data: "))))
        kinds = [name for name, _ in events]
        assert kinds[-1] == "status" and events[-1][1]["status"] == "COMPLETED"
        progress = [data for name, data in events if name == "progress"]
        assert progress and progress[-1]["value"] == progress[-1]["max"]
        assert "log" in kinds


def test_webhook_is_signed_and_delivered(server: LiveServer) -> None:
    # A receiver on this machine: the test server allows private targets.
    received: list[tuple[dict, bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        with server.client() as client:
            submitted = client.post(f"/v2/solid-color?webhook=http://127.0.0.1:{port}/hook", json={}).json()
            deadline = time.monotonic() + 30
            while not (deliveries := server.call(server.service.store.deliveries(submitted["request_id"]))):
                assert time.monotonic() < deadline
                time.sleep(0.05)
        headers, raw = received[0]
        body = Webhook(server.service.webhook_secret).verify(raw, headers)
        assert body["request_id"] == submitted["request_id"] and body["status"] == "COMPLETED"
        with pytest.raises(WebhookVerificationError):
            Webhook(new_secret()).verify(raw, headers)
        assert [(d.attempt, d.status_code) for d in deliveries] == [(1, 204)]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def test_open_mode_needs_no_key(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/v1/solid-color", json={"width": 4, "height": 4})
        assert response.status_code == 200 and "x-remaining-credits" not in response.headers
