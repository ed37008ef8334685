"""The seeds' sample requests, as their clients send them, answer images of the requested size and format.

The Segmind JS samples post multipart forms (every value a string); the Python SDK posts JSON. The
models are the tiny random test models, so the images are noise of the right size and format.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

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


def test_same_seed_same_image_other_seed_other_image(server: LiveServer) -> None:
    request = {**FLUX_SCHNELL_SAMPLE, "width": 512, "height": 512, "steps": 2}
    with server.client() as client:
        first = client.post("/v1/flux-schnell", json=request).content
        again = client.post("/v1/flux-schnell", json=request).content
        other = client.post("/v1/flux-schnell", json={**request, "seed": 1}).content
    assert first == again and first != other
