"""The seeds' sample requests, as their clients send them, answer images of the requested size and format.

The Segmind JS samples post multipart forms (every value a string); the Python SDK posts JSON. The
models are the tiny random test models, so the images are noise of the right size and format.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from PIL import Image

from engine.settings import Settings
from tests.api.conftest import LiveServer
from tests.endpoints.samples import AURA_SAMPLE, FLUX_PRO_SAMPLE, FLUX_SCHNELL_SAMPLE

CASES = [
    ("aura-flow", AURA_SAMPLE, (1024, 1024), "WEBP", "image/webp"),
    ("flux-pro", FLUX_PRO_SAMPLE, (1024, 1024), "WEBP", "image/webp"),
    ("flux-schnell", FLUX_SCHNELL_SAMPLE, (1024, 1024), "JPEG", "image/jpeg"),
]


def as_form(values: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in values.items()}


@pytest.mark.slow
@pytest.mark.parametrize(("endpoint", "sample", "size", "pil_format", "content_type"), CASES)
@pytest.mark.parametrize("encoding", ["json", "multipart"])
def test_seed_sample_request(
    server: LiveServer,
    endpoint: str,
    sample: dict[str, Any],
    size: tuple[int, int],
    pil_format: str,
    content_type: str,
    encoding: str,
) -> None:
    with server.client() as client:
        if encoding == "json":
            response = client.post(f"/v1/{endpoint}", json=sample)
        else:
            response = client.post(
                f"/v1/{endpoint}", files={k: (None, v) for k, v in as_form(sample).items()}
            )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert response.headers["x-seed"] == str(sample["seed"])
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == (pil_format, size)


@pytest.fixture
def uncached_server(settings: Settings) -> Iterator[LiveServer]:
    """A server that keeps no node outputs between runs, so a repeated request really samples again."""
    with LiveServer(replace(settings, open_access=True, cache_bytes=0)) as live:
        yield live


def generate(server: LiveServer, client: httpx.Client, request: dict[str, Any]) -> tuple[bytes, list[str]]:
    """The image of one v2 request, and its log: which nodes it really ran."""
    submitted = client.post("/v2/flux-schnell", json=request).json()
    deadline = time.monotonic() + 120
    while (status := client.get(submitted["status_url"]).json())["status"] != "COMPLETED":
        assert status["status"] in ("QUEUED", "PROCESSING") and time.monotonic() < deadline, status
        time.sleep(0.05)
    body = client.get(submitted["response_url"]).json()
    logs = server.call(server.service.store.logs(submitted["request_id"]))
    return httpx.get(body["output"]).content, [line.message for line in logs]


def test_same_seed_same_image_other_seed_other_image(uncached_server: LiveServer) -> None:
    request = {**FLUX_SCHNELL_SAMPLE, "width": 512, "height": 512, "steps": 2}
    with uncached_server.client() as client:
        first, _ = generate(uncached_server, client, request)
        again, again_log = generate(uncached_server, client, request)
        other, _ = generate(uncached_server, client, {**request, "seed": 1})
    sampled = [message for message in again_log if message.startswith("running SamplerCustomAdvanced")]
    assert sampled, f"the repeated request was not sampled again: {again_log}"
    assert first == again and first != other
