"""ComfyUI's queue on the engine's job system: /queue lists running and pending prompts in run order and
deletes or clears pending ones, `front` jumps the queue, /interrupt stops the running prompt, prompts
are kept through a restart, an identical resubmission still returns its outputs, two clients' prompts
never mix, and /free unloads models and drops cached outputs.

Shapes are ComfyUI's (server.py): a queue item is [number, prompt_id, prompt, extra_data,
outputs_to_execute]; POST /queue, /interrupt and /free answer 200 with an empty body.
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import replace
from typing import Any

import httpx
from PIL import Image

from engine.settings import Settings
from tests.api.comfy_client import ComfyClient, texts
from tests.api.conftest import LiveServer
from tests.api.test_comfy_examples import example


def slow(seconds: float, color: int = 0, prefix: str = "slow") -> dict[str, Any]:
    """A graph that runs for `seconds` in its node "2" (which stops when interrupted) and saves an image."""
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": color},
        },
        "2": {"class_type": "SlowImages", "inputs": {"images": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def ids(items: list[list[Any]]) -> list[str]:
    return [item[1] for item in items]


def wait_for_status(http: httpx.Client, prompt_id: str, status: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = http.get(f"/api/jobs/{prompt_id}")
        if response.status_code == 200 and response.json()["status"] == status:
            return dict(response.json())
        assert time.monotonic() < deadline, response.text
        time.sleep(0.05)


def test_queue_lists_deletes_clears_and_interrupts(server: LiveServer) -> None:
    with ComfyClient(server.url) as client:
        running = client.queue(slow(60, color=1))
        client.until_running(running, "2")
        second = client.queue(slow(0.1, color=2))
        third = client.queue(slow(0.1, color=3))
        response = client.queue_prompt(slow(0.1, color=4), front=True)
        front = response.json()["prompt_id"]

        queue = client.http.get("/queue").json()
        assert set(queue) == {"queue_running", "queue_pending"}
        assert ids(queue["queue_running"]) == [running]
        assert ids(queue["queue_pending"]) == [front, second, third]
        number, prompt_id, prompt, extra_data, outputs = queue["queue_pending"][1]
        assert (prompt_id, prompt, outputs) == (second, slow(0.1, color=2), ["3"])
        assert extra_data["client_id"] == client.client_id and isinstance(number, int)
        assert queue["queue_pending"][0][0] == response.json()["number"] < 0 < number

        deleted = client.http.post("/queue", json={"delete": [second, str(uuid.uuid4())]})
        assert (deleted.status_code, deleted.content) == (200, b"")
        assert ids(client.http.get("/queue").json()["queue_pending"]) == [front, third]
        assert client.http.get(f"/api/jobs/{second}").status_code == 404  # forgotten, as in ComfyUI
        assert client.history(second) == {}

        assert client.http.post("/queue", json={"clear": True}).status_code == 200
        queue = client.http.get("/queue").json()
        assert ids(queue["queue_running"]) == [running] and queue["queue_pending"] == []

        assert client.http.post("/interrupt", json={"prompt_id": third}).status_code == 200
        assert ids(client.http.get("/queue").json()["queue_running"]) == [running]  # not the running one

        stopped = client.http.post("/interrupt")
        assert (stopped.status_code, stopped.content) == (200, b"")
        frames = client.until_done(running)
        history = client.history(running)[running]

    (interrupted,) = [data for kind, data in texts(frames, running) if kind == "execution_interrupted"]
    assert {k: interrupted[k] for k in ("node_id", "node_type", "executed")} == {
        "node_id": "2",
        "node_type": "SlowImages",
        "executed": ["1"],
    }
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    assert history["status"]["messages"][-1] == ["execution_interrupted", interrupted]
    assert httpx.get(f"{server.url}/api/jobs/{running}").json()["status"] == "cancelled"
    statuses = [data for kind, data in texts(frames) if kind == "status"]
    assert statuses[-1] == {"status": {"exec_info": {"queue_remaining": 0}}}
    assert httpx.get(f"{server.url}/queue").json() == {"queue_running": [], "queue_pending": []}


def test_front_runs_first_and_number_orders_the_queue(server: LiveServer) -> None:
    with ComfyClient(server.url) as client:
        blocker = client.queue(slow(0.5, color=11))
        client.until_running(blocker, "2")
        late = client.queue(slow(0.05, color=12))
        numbered = client.queue(slow(0.05, color=13), number=-1e6)
        front = client.queue(slow(0.05, color=14), front=True)
        frames = client.until_done(late)
    started = [data["prompt_id"] for kind, data in texts(frames) if kind == "execution_start"]
    assert started == [numbered, front, late]


def test_prompts_are_kept_through_a_restart(settings: Settings) -> None:
    settings = replace(settings, open_access=True)
    extra = {"extra_pnginfo": {"workflow": {"id": "kept"}}}
    with LiveServer(settings) as first, ComfyClient(first.url) as client:
        done = client.queue(slow(0, color=21))
        client.until_done(done)
        before = client.history(done)
        running = client.queue(slow(1.0, color=22))
        client.until_running(running, "2")
        waiting = client.queue(slow(0, color=23), extra_data=extra)
        queued = client.http.get("/queue").json()
    # The server stops with one prompt running and one waiting: both go back to the queue.
    with LiveServer(settings) as second, httpx.Client(base_url=second.url) as http:
        assert http.get(f"/history/{done}").json() == before
        for prompt_id in (running, waiting):
            wait_for_status(http, prompt_id, "completed")
        history = http.get("/history").json()
    assert list(history) == [done, running, waiting]
    assert history[waiting]["prompt"] == queued["queue_pending"][0]  # number, prompt and extra_data kept
    assert history[running]["prompt"] == queued["queue_running"][0]
    assert history[waiting]["prompt"][3]["extra_pnginfo"] == extra["extra_pnginfo"]
    assert history[running]["status"]["status_str"] == "success"


def test_an_identical_prompt_again_returns_its_outputs(server: LiveServer) -> None:
    prompt = slow(0, color=31, prefix="again")
    with ComfyClient(server.url) as client:
        first = client.queue(prompt)
        client.until_done(first)
        second = client.queue(prompt)
        frames = client.until_done(second)
        histories = client.history(first)[first], client.history(second)[second]
        job = client.http.get(f"/api/jobs/{second}").json()
    assert histories[0]["outputs"]["3"]["images"] == [
        {"filename": "again_00001_.png", "subfolder": "", "type": "output"}
    ]
    assert histories[1]["outputs"] == histories[0]["outputs"]
    ((_, cached),) = [(k, d) for k, d in texts(frames, second) if k == "execution_cached"]
    assert "3" in cached["nodes"]
    executed = [data for kind, data in texts(frames, second) if kind == "executed"]
    assert executed == [
        {"node": "3", "display_node": "3", "output": histories[0]["outputs"]["3"], "prompt_id": second}
    ]
    assert job["outputs_count"] == 1 and job["preview_output"]["filename"] == "again_00001_.png"


def test_two_clients_prompts_never_mix(server: LiveServer) -> None:
    with ComfyClient(server.url) as one, ComfyClient(server.url) as other:
        first = one.queue(slow(0.3, color=0x102030, prefix="one"))
        second = other.queue(slow(0.3, color=0xF0E0D0, prefix="other"))
        frames = {first: one.until_done(first), second: other.until_done(second)}
        outputs = {first: one.history(first)[first], second: other.history(second)[second]}
        for prompt_id, client, rgb, prefix in (
            (first, one, (0x10, 0x20, 0x30), "one"),
            (second, other, (0xF0, 0xE0, 0xD0), "other"),
        ):
            heard = {data.get("prompt_id") for _, data in texts(frames[prompt_id])}
            assert heard == {None, prompt_id}  # status messages name no prompt; the other's never came
            (image,) = outputs[prompt_id]["outputs"]["3"]["images"]
            assert image["filename"].startswith(f"{prefix}_")
            with Image.open(io.BytesIO(client.image(image, server.service.outputs.output_dir))) as png:
                assert png.getpixel((0, 0)) == rgb  # EmptyImage's color is 0xRRGGBB


def test_free_unloads_models_and_drops_cached_outputs(server: LiveServer) -> None:
    prompt = example("flux_schnell_example")
    for node in prompt.values():
        if node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
    with ComfyClient(server.url) as client:
        client.until_done(client.queue(prompt))
        assert server.service.models.resident() and len(server.service.executor.cache)
        assert client.http.post("/free", json={"unload_models": True}).status_code == 200
        assert server.service.models.resident() == [] and len(server.service.executor.cache)
        assert client.http.post("/free", json={"free_memory": True}).status_code == 200
        assert len(server.service.executor.cache) == 0
        refused = client.http.post("/free", json={"unload_models": "yes"})
        assert refused.status_code == 400 and "unload_models" in refused.json()["error"]
