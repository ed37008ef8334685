"""Health, readiness after warm-up, Prometheus metrics, the endpoint catalogue, OpenAPI and docs."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from engine.settings import Settings
from tests.api.conftest import LiveServer


def test_ready_only_after_warm_up(settings: Settings) -> None:
    with (
        LiveServer(replace(settings, warmup_endpoints=("solid-color", "slow"), open_access=True)) as server,
        server.client() as client,
    ):
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        assert set(ready.json()["warmup_seconds"]) == {"solid-color", "slow"}
        assert not (server.service.settings.base_dir / "output" / "warm-up").exists()


def test_an_endpoint_whose_warm_up_fails_becomes_unavailable_and_ready_says_why(
    settings: Settings, test_models: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(test_models, models, copy_function=os.symlink)
    shutil.rmtree(models / "text_encoders" / "tokenizers" / "clip_l")  # Flux needs it, AuraFlow does not
    warm_up = ("flux-schnell", "solid-color")
    with (
        LiveServer(
            replace(settings, models_dir=models, warmup_endpoints=warm_up, open_access=True)
        ) as server,
        server.client() as client,
    ):
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        failed = ready.json()["warmup_failed"]
        assert list(failed) == ["flux-schnell"] and "vocab.json + merges.txt" in failed["flux-schnell"]
        assert "flux-schnell" in ready.json()["reason"]
        refused = client.post("/v1/flux-schnell", json={"prompt": "a fox"})
        assert refused.status_code == 503
        assert "warm-up failed" in refused.json()["error"] and "vocab.json" in refused.json()["error"]
        assert client.post("/v1/solid-color", json={}).status_code == 200
        served = client.post(
            "/v1/aura-flow", json={"prompt": "a fox", "steps": 1, "width": 512, "height": 512}
        )
        assert served.status_code == 200


def test_metrics_are_prometheus_text(server: LiveServer) -> None:
    with server.client() as client:
        client.post("/v1/solid-color", json={})
        client.post("/v1/broken", json={})
        text = client.get("/metrics").text
    assert "engine_queue_depth 0.0" in text
    assert 'engine_jobs_finished_total{endpoint="solid-color",status="COMPLETED"} 1.0' in text
    assert 'engine_jobs_finished_total{endpoint="broken",status="FAILED"} 1.0' in text
    assert 'engine_inference_seconds_count{endpoint="solid-color"} 1.0' in text
    assert "engine_queue_wait_seconds_bucket" in text and "engine_model_load_seconds" in text


def test_metrics_report_the_output_cache_against_its_limit(settings: Settings) -> None:
    image_bytes = 64 * 32 * 3 * 4  # one 64x32 RGB float32 IMAGE, the largest output a solid-color run caches
    limit = image_bytes + 4096
    with (
        LiveServer(replace(settings, cache_bytes=limit, open_access=True)) as server,
        server.client() as client,
    ):

        def cache() -> dict[str, float]:
            families = text_string_to_metric_families(client.get("/metrics").text)
            return {
                s.name: s.value for f in families for s in f.samples if s.name.startswith("engine_output")
            }

        assert cache() == {"engine_output_cache_bytes": 0.0, "engine_output_cache_limit_bytes": limit}
        for color in (0, 255):
            request = {"width": 64, "height": 32, "color": color}
            assert client.post("/v1/solid-color", json=request).status_code == 200
            held = cache()["engine_output_cache_bytes"]
            assert image_bytes <= held <= limit  # the second image pushed the first out


def test_model_load_time_is_measured(server: LiveServer) -> None:
    server.service.models.unload_all()
    with server.client() as client:
        request = {"prompt": "a fox", "steps": 1, "width": 512, "height": 512}
        response = client.post("/v1/flux-schnell", json=request)
        assert response.status_code == 200
        text = client.get("/metrics").text
    count = next(line for line in text.splitlines() if line.startswith("engine_model_load_seconds_count"))
    assert float(count.split()[-1]) >= 1  # the models this request needed were loaded, and timed
    assert 'engine_memory_bytes{kind="model_weights"}' in text and "process_resident_memory_bytes" in text


def test_endpoint_catalogue_openapi_and_docs(server: LiveServer) -> None:
    with server.client() as client:
        listing = {entry["id"]: entry for entry in client.get("/v1/endpoints").json()["endpoints"]}
        assert {"aura-flow", "flux-schnell", "flux-pro", "flux-dev", "fal-ai/aura-flow"} <= set(listing)
        schema = listing["aura-flow"]["schema"]["properties"]
        assert schema["steps"]["minimum"] == 1 and schema["steps"]["maximum"] == 100
        assert schema["sampler"]["default"] == "uni_pc"
        spec = client.get("/openapi.json").json()
        assert spec["openapi"].startswith("3.1") and "/v1/aura-flow" in spec["paths"]
        assert "/fal-ai/aura-flow" in spec["paths"]
        docs = client.get("/docs")
        assert docs.headers["content-type"].startswith("text/html") and "flux-schnell" in docs.text


def test_random_test_weights_are_announced_on_every_response(settings: Settings) -> None:
    with (
        LiveServer(replace(settings, models_dir=None, test_models=None, open_access=True)) as server,
        server.client() as client,
    ):
        assert server.service.test_weights
        for response in (
            client.get("/health"),
            client.post("/v1/solid-color", json={}),
            client.get("/nowhere"),
        ):
            assert response.headers["x-engine-test-weights"] == "true"
            assert "random test weights" in response.headers["Warning"]
