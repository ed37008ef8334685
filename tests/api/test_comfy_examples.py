"""ComfyUI's own client flow (script_examples/websockets_api_example.py) against the engine, for ComfyUI's
AuraFlow and Flux example graphs, unchanged but for a smaller image, on the tiny test models.

What is checked is what that script and the editor rely on, in the shapes ComfyUI documents (COMFY.md
§10): the first message is `status` with the client's sid; the prompt's messages come in ComfyUI's
order and end with `executing` null; the sampler sends binary JPEG previews (type 1, format 1); the
history entry lists the saved image, whose PNG carries the prompt as ComfyUI writes it.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.api.comfy_client import ComfyClient, texts
from tests.api.conftest import LiveServer

EXAMPLES = Path(__file__).resolve().parents[1] / "diffusion" / "comfy_examples"
NAMES = sorted(path.name.removesuffix(".prompt.json") for path in EXAMPLES.glob("*.prompt.json"))
SIZE = 256
SAMPLERS = {"KSampler", "SamplerCustomAdvanced"}
"""The examples ask for 1024x1024; a quarter of that keeps four runs on a CPU short."""


def example(name: str) -> dict[str, Any]:
    prompt = json.loads((EXAMPLES / f"{name}.prompt.json").read_text())
    for node in prompt.values():
        if node["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage"):
            node["inputs"].update(width=SIZE, height=SIZE)
    return prompt


def test_the_four_examples_are_here() -> None:
    assert NAMES == [
        "aura_flow_0.2_example",
        "flux_dev_example",
        "flux_schnell_checkpoint_example",
        "flux_schnell_example",
    ]


@pytest.mark.parametrize("name", NAMES)
def test_websockets_api_example_flow(server: LiveServer, name: str) -> None:
    prompt = example(name)
    (save,) = [node_id for node_id, node in prompt.items() if node["class_type"] == "SaveImage"]
    output_dir = server.service.outputs.output_dir
    with ComfyClient(server.url) as client:
        assert client.connected == (
            "status",
            {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client.client_id},
        )
        prompt_id = client.queue(prompt)
        frames = client.until_done(prompt_id)
        history = client.history(prompt_id)[prompt_id]
        (image,) = history["outputs"][save]["images"]
        png = client.image(image, output_dir)

    kinds = [kind for kind, _ in texts(frames, prompt_id)]
    assert kinds[:2] == ["execution_start", "execution_cached"]
    assert kinds[-2:] == ["execution_success", "executing"]
    executing = [data["node"] for kind, data in texts(frames, prompt_id) if kind == "executing"]
    assert set(executing[:-1]) == set(prompt) and executing[-1] is None  # every node ran, once each
    assert len(executing) == len(prompt) + 1
    executed = [data for kind, data in texts(frames, prompt_id) if kind == "executed"]
    assert executed == [
        {"node": save, "display_node": save, "output": history["outputs"][save], "prompt_id": prompt_id}
    ]
    (sampler,) = [node_id for node_id, node in prompt.items() if node["class_type"] in SAMPLERS]
    steps = [
        data for kind, data in texts(frames, prompt_id) if kind == "progress" and data["node"] == sampler
    ]
    assert [step["value"] for step in steps] == list(range(1, steps[0]["max"] + 1))

    previews = [frame for frame in frames if isinstance(frame, bytes)]
    assert len(previews) == len(steps)  # one preview per sampler step
    for preview in previews:
        assert struct.unpack(">II", preview[:8]) == (1, 1)  # PREVIEW_IMAGE, JPEG
        with Image.open(io.BytesIO(preview[8:])) as jpeg:
            assert jpeg.format == "JPEG"

    assert history["prompt"][:3] == [history["prompt"][0], prompt_id, prompt]
    assert history["prompt"][3]["client_id"] == client.client_id and history["prompt"][4] == [save]
    assert history["status"]["status_str"] == "success" and history["status"]["completed"] is True
    assert [kind for kind, _ in history["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert history["meta"][save] == {
        "node_id": save,
        "display_node": save,
        "parent_node": None,
        "real_node_id": save,
    }
    assert image["type"] == "output"
    with Image.open(io.BytesIO(png)) as saved:
        assert saved.format == "PNG" and saved.size == (SIZE, SIZE)
        assert json.loads(saved.text["prompt"]) == prompt
