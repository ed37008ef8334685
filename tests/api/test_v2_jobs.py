"""Comfy API v2 jobs against a real server, driven by Comfy's official Python SDK (`comfy-sdk`, pointed at
the server with COMFY_BASE_URL), with every response the tests read themselves validated against the
published specification (tests/api/v2_spec.py).

The SDK flow is ComfyUI's Flux schnell example graph, turned img2img on an uploaded asset (LoadImage →
VAEEncode → KSampler at denoise 0.6) at a small size on the tiny test models; its output is compared
with the bytes ComfyUI's /view serves for the same file.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from comfy_sdk import Comfy
from comfy_sdk.events import Progress, StatusChange
from comfy_sdk.exceptions import IdempotencyKeyReuse, NotFound
from PIL import Image

from engine.jobs.store import JobQuery
from engine.settings import Settings
from tests.api.conftest import LiveServer
from tests.api.test_comfy_queue import slow
from tests.api.v2_spec import SpecChecker

JOBS = "/api/v2/jobs"
EXAMPLES = Path(__file__).resolve().parents[1] / "diffusion" / "comfy_examples"
SIZE = 64


def img2img_example(path: Path) -> Path:
    """ComfyUI's flux schnell example with its empty latent replaced by an encoded image (node 30, a
    LoadImage the SDK fills with an asset) and its sampler by a KSampler at denoise 0.6."""
    graph = json.loads((EXAMPLES / "flux_schnell_example.prompt.json").read_text())
    for unused in ("5", "13", "16", "17", "22", "25"):
        del graph[unused]
    graph["30"] = {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}}
    graph["31"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["30", 0], "vae": ["10", 0]}}
    graph["32"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["11", 0]}}
    graph["33"] = {
        "class_type": "KSampler",
        "inputs": {
            "model": ["12", 0],
            "seed": 7,
            "steps": 4,
            "cfg": 1.0,
            "sampler_name": "euler",
            "scheduler": "simple",
            "positive": ["6", 0],
            "negative": ["32", 0],
            "latent_image": ["31", 0],
            "denoise": 0.6,
        },
    }
    graph["8"]["inputs"]["samples"] = ["33", 0]
    path.write_text(json.dumps(graph))
    return path


def png_file(path: Path) -> Path:
    Image.new("RGB", (SIZE, SIZE), (40, 120, 200)).save(path, format="PNG")
    return path


@pytest.fixture
def keys(settings: Settings) -> Iterator[tuple[LiveServer, str, str]]:
    """A server that requires keys, and two keys' secrets."""
    with LiveServer(settings) as live:
        _, alice = live.service.keys.add_key("alice", credits=10, rate_per_minute=600)
        _, bob = live.service.keys.add_key("bob", credits=10, rate_per_minute=600)
        yield live, alice, bob


def sdk(server: LiveServer, secret: str, monkeypatch: pytest.MonkeyPatch) -> Comfy:
    monkeypatch.setenv("COMFY_BASE_URL", server.url)
    return Comfy(api_key=secret)


def http(server: LiveServer, secret: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.Client(base_url=server.url, headers=headers, timeout=60)


def checked_job(spec: SpecChecker, client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = spec.check(client.get(f"{JOBS}/{job_id}"))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_status(spec: SpecChecker, client: httpx.Client, job_id: str, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while True:
        job = checked_job(spec, client, job_id)
        if job["status"] == wanted:
            return job
        assert time.monotonic() < deadline, f"job {job_id} never became {wanted}: {job['status']}"
        time.sleep(0.05)


def error(spec: SpecChecker, response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    spec.check(response)
    assert response.status_code == status, (response.status_code, response.text[:400])
    body: dict[str, Any] = response.json()["error"]
    assert body["code"] == code, body
    return body


def test_sdk_img2img_on_an_uploaded_asset(
    keys: tuple[LiveServer, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, alice, _ = keys
    spec = SpecChecker(server.url)
    client = sdk(server, alice, monkeypatch)
    with http(server, alice) as plain:
        # a slow job ahead keeps the img2img job queued while its event stream opens
        ahead = plain.post(JOBS, json={"workflow": slow(1.0)})
        assert spec.check(ahead).status_code == 201, ahead.text
        workflow = client.workflows.from_file(img2img_example(tmp_path / "img2img.json"))
        workflow.set_input("30", "image", client.assets.from_file(png_file(tmp_path / "photo.png")))
        job = client.submit(workflow)
        events = list(job.events())
        job.result()

        statuses = [event.status for event in events if isinstance(event, StatusChange)]
        assert statuses[0] == "queued" and statuses[-1] == "succeeded", statuses
        assert "running" in statuses
        assert all(0.0 <= e.value <= 1.0 for e in events if isinstance(e, Progress))

        polled = checked_job(spec, plain, job.id)  # the 10 nodes of the graph all ran
        assert polled["progress"] == {"value": 1.0, "nodes_done": 10, "nodes_total": 10, "message": None}
        [output] = job.get_outputs("9")
        assert output.type == "image" and output.content_type == "image/png"
        data = output.to_bytes()
        assert Image.open(io.BytesIO(data)).size == (SIZE, SIZE)

        history = plain.get(f"/history/{job.id}").json()[job.id]["outputs"]["9"]["images"][0]
        view = plain.get("/view", params={**history, "type": "output"})
        assert view.status_code == 200 and view.content == data
        assert output.name == history["filename"]

        asset = spec.check(plain.get(f"/api/v2/assets/{polled['outputs'][0]['id']}")).json()
        assert asset["job_id"] == job.id and asset["size_bytes"] == len(data)

        executed = job.get_workflow()
        assert executed.format == "api"
        assert executed.graph["33"]["inputs"]["denoise"] == 0.6
        assert executed.graph["30"]["inputs"]["image"].startswith("assets/")  # the asset, resolved
        spec.check(plain.get(f"{JOBS}/{job.id}/workflow"))


SSE_SCHEMAS = {"status": "StatusEvent", "progress": "Progress", "preview": "PreviewEvent", "output": "Output"}


def raw_events(spec: SpecChecker, client: httpx.Client, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every frame of a job's event stream, each checked against its schema in the specification."""
    frames = []
    with client.stream("GET", f"{JOBS}/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                assert name in SSE_SCHEMAS, name
                data = spec.check_schema(SSE_SCHEMAS[name], json.loads(line.removeprefix("data: ")))
                frames.append((name, data))
                name = None
    return frames


def test_event_stream_frames_follow_the_specification(keys: tuple[LiveServer, str, str]) -> None:
    server, alice, _ = keys
    spec = SpecChecker(server.url)
    with http(server, alice) as plain:
        job_id = spec.check(plain.post(JOBS, json={"workflow": slow(1.5)})).json()["id"]
        frames = raw_events(spec, plain, job_id)
        names = [name for name, _ in frames]
        assert names[-2:] == ["output", "status"] and frames[-1][1]["status"] == "succeeded", names
        steps = [data for name, data in frames if name == "progress" and data["step"] is not None]
        assert len(steps) >= 2 and all(data["current_node_class"] == "SlowImages" for data in steps)
        assert [data["value"] for data in steps] == sorted(data["value"] for data in steps)
        output = frames[-2][1]
        assert output == checked_job(spec, plain, job_id)["outputs"][0] | {
            "url_expires_at": output["url_expires_at"]
        }


def test_outputs_appear_while_the_job_runs(keys: tuple[LiveServer, str, str]) -> None:
    """Two branches, each a two-second node before a SaveImage: whichever runs first has its image
    listed while the other still runs, with the bytes /view serves for that file."""
    server, alice, _ = keys
    spec = SpecChecker(server.url)
    graph = {
        "1": slow(0)["1"],
        "2": {"class_type": "SlowImages", "inputs": {"images": ["1", 0], "seconds": 2.0}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "first"}},
        "4": {"class_type": "SlowImages", "inputs": {"images": ["1", 0], "seconds": 2.5}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "second"}},
    }
    with http(server, alice) as plain:
        job_id = spec.check(plain.post(JOBS, json={"workflow": graph})).json()["id"]
        deadline = time.monotonic() + 60
        while not (job := checked_job(spec, plain, job_id))["outputs"]:
            assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
            time.sleep(0.05)
        assert job["status"] == "running"
        [output] = job["outputs"]
        assert output["node_id"] in ("3", "5")
        content = plain.get(output["url"])
        view = plain.get("/view", params={"filename": output["name"], "type": "output"})
        assert content.status_code == view.status_code == 200 and content.content == view.content
        done = wait_status(spec, plain, job_id, "succeeded")
        assert sorted(item["node_id"] for item in done["outputs"]) == ["3", "5"]
        assert output["id"] in [item["id"] for item in done["outputs"]]


def test_progress_stream_and_cancel_of_a_running_job(
    keys: tuple[LiveServer, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, alice, _ = keys
    spec = SpecChecker(server.url)
    client = sdk(server, alice, monkeypatch)
    job = client.submit(client.workflows.from_json(slow(60)))
    steps: list[Progress] = []
    with http(server, alice) as plain:
        for event in job.events():
            if isinstance(event, Progress) and event.step is not None:
                steps.append(event)
                if len(steps) == 3:
                    cancelled = spec.check(plain.post(f"{JOBS}/{job.id}/cancel"))
                    assert cancelled.json()["status"] in ("canceling", "canceled")
            if isinstance(event, StatusChange) and event.status in ("succeeded", "failed", "canceled"):
                assert event.status == "canceled"
        assert [e.step for e in steps] == sorted(e.step for e in steps)
        assert steps[0].steps == 1200 and steps[0].current_node == "2"
        assert 0 < steps[0].value < steps[-1].value < 1
        done = wait_status(spec, plain, job.id, "canceled")
        assert done["outputs"] == [] and done["completed_at"] is not None
        again = spec.check(plain.post(f"{JOBS}/{job.id}/cancel"))  # idempotent on a finished job
        assert again.status_code == 200 and again.json()["status"] == "canceled"


def test_idempotency_key_is_single_use(
    keys: tuple[LiveServer, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, alice, _ = keys
    spec = SpecChecker(server.url)
    client = sdk(server, alice, monkeypatch)
    first = client.submit(client.workflows.from_json(slow(0)), idempotency_key="order-42")
    with pytest.raises(IdempotencyKeyReuse):
        client.submit(client.workflows.from_json(slow(0)), idempotency_key="order-42")
    with http(server, alice) as plain:
        reused = plain.post(JOBS, json={"workflow": slow(0)}, headers={"Idempotency-Key": "order-42"})
        error(spec, reused, 422, "idempotency_key_reuse")
        # a refused submission releases its key: the corrected retry goes through
        bad = plain.post(
            JOBS,
            json={"workflow": {"1": {"class_type": "Nope", "inputs": {}}}},
            headers={"Idempotency-Key": "retry-7"},
        )
        error(spec, bad, 422, "invalid_workflow")
        good = plain.post(JOBS, json={"workflow": slow(0)}, headers={"Idempotency-Key": "retry-7"})
        assert spec.check(good).status_code == 201
        jobs, _ = server.call(server.service.list_jobs(JobQuery()))
        assert sorted(j.id for j in jobs) == sorted([first.id, good.json()["id"]])


def test_another_keys_job_is_not_visible(
    keys: tuple[LiveServer, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, alice, bob = keys
    spec = SpecChecker(server.url)
    job = sdk(server, alice, monkeypatch).submit(Comfy(api_key=alice).workflows.from_json(slow(0)))
    with pytest.raises(NotFound):
        sdk(server, bob, monkeypatch).jobs.get(job.id)
    with http(server, bob) as other, http(server, alice) as own, http(server, None) as nobody:
        for path in ("", "/workflow", "/events"):
            error(spec, other.get(f"{JOBS}/{job.id}{path}"), 404, "not_found")
        error(spec, other.post(f"{JOBS}/{job.id}/cancel"), 404, "not_found")
        error(spec, nobody.get(f"{JOBS}/{job.id}"), 401, "unauthorized")
        assert checked_job(spec, own, job.id)["id"] == job.id


def test_refused_submissions(keys: tuple[LiveServer, str, str], tmp_path: Path) -> None:
    server, alice, bob = keys
    spec = SpecChecker(server.url)
    with http(server, alice) as plain, http(server, bob) as other:
        error(
            spec,
            plain.post(JOBS, content=b"{not json", headers={"Content-Type": "application/json"}),
            422,
            "invalid_request",
        )
        error(spec, plain.post(JOBS, json=[1, 2]), 422, "invalid_request")
        error(spec, plain.post(JOBS, json={}), 422, "invalid_request")
        error(spec, plain.post(JOBS, json={"workflow": "x" * 10}), 422, "invalid_request")
        error(
            spec,
            plain.post(JOBS, json={"workflow": slow(0), "webhook_url": "http://x"}),
            422,
            "invalid_request",
        )
        error(
            spec,
            plain.post(JOBS, json={"workflow": slow(0), "extra_data": {"client_id": "x"}}),
            422,
            "invalid_request",
        )
        ui = json.loads((EXAMPLES / "flux_schnell_example.workflow.json").read_text())
        error(spec, plain.post(JOBS, json={"workflow": ui}), 422, "workflow_format_ui")
        huge = slow(0)
        huge["2"]["inputs"]["seconds"] = 10**400
        error(
            spec,
            plain.post(
                JOBS,
                content=json.dumps({"workflow": huge}).encode(),
                headers={"Content-Type": "application/json"},
            ),
            422,
            "invalid_request",
        )
        missing = slow(0)
        missing["2"]["inputs"]["seconds"] = 99.0
        body = error(spec, plain.post(JOBS, json={"workflow": missing}), 422, "invalid_workflow")
        assert body["details"]["node_errors"]["2"][0]["field"] == "seconds"

        uploaded = other.post(
            "/api/v2/assets",
            data={"content_type": "image/png", "file_path": "b.png"},
            files={"file": ("b.png", png_file(tmp_path / "b.png").read_bytes(), "image/png")},
        )
        bobs = spec.check(uploaded).json()["id"]
        reference = {"__type": "core/ASSET", "info": {"id": bobs}}
        graph = {
            "1": {"class_type": "LoadImage", "inputs": {"image": reference}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
        }
        body = error(spec, plain.post(JOBS, json={"workflow": graph}), 422, "missing_asset")
        assert body["details"]["node_errors"]["1"][0]["field"] == "image"
        assert spec.check(other.post(JOBS, json={"workflow": graph})).status_code == 201  # bob's own asset

        for job_id in ("..%2F..%2Fetc%2Fpasswd", "%00", "x" * 2000, "' OR 1=1 --"):
            for path in ("", "/workflow", "/events"):
                error(spec, plain.get(f"{JOBS}/{job_id}{path}"), 404, "not_found")
            error(spec, plain.post(f"{JOBS}/{job_id}/cancel"), 404, "not_found")


def test_queue_full(settings: Settings) -> None:
    with LiveServer(
        replace(settings, open_access=True, max_queue_depth=1, queue_full_retry_seconds=7)
    ) as live:
        spec = SpecChecker(live.url)
        with http(live, None) as plain:
            running = spec.check(plain.post(JOBS, json={"workflow": slow(30)}))
            wait_status(spec, plain, running.json()["id"], "running")
            wait_status(spec, plain, plain.post(JOBS, json={"workflow": slow(0)}).json()["id"], "queued")
            full = plain.post(JOBS, json={"workflow": slow(0)}, headers={"Idempotency-Key": "k1"})
            error(spec, full, 429, "queue_full")
            assert full.headers["Retry-After"] == "7"


def test_a_failing_node_is_the_jobs_error(keys: tuple[LiveServer, str, str]) -> None:
    server, alice, _ = keys
    spec = SpecChecker(server.url)
    graph = slow(0)
    graph["2"] = {"class_type": "FailingImages", "inputs": {"images": ["1", 0]}}
    with http(server, alice) as plain:
        job_id = spec.check(plain.post(JOBS, json={"workflow": graph})).json()["id"]
        failed = wait_status(spec, plain, job_id, "failed")
    assert failed["error"]["node_id"] == "2" and failed["error"]["class_type"] == "FailingImages"
    assert "this node fails on purpose" in failed["error"]["message"]
    assert "RuntimeError" in failed["error"]["traceback"]
    assert failed["outputs"] == [] and failed["progress"] is None
