"""A V3 custom node package (custom_nodes/example_v3) served by a live server: the editor's /object_info
lists its nodes in ComfyUI's V3 shape, POST /prompt runs a graph mixing them with V1 nodes, and bad or
hostile values for V3 inputs are ComfyUI-shaped 400s naming the input, never a 500.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from engine.settings import Settings
from tests.api.comfy_client import ComfyClient
from tests.api.conftest import LiveServer
from tests.comfy_fixtures import index

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def v3_server(settings: Settings) -> Iterator[LiveServer]:
    custom = (*settings.custom_nodes_dirs, REPO / "custom_nodes")
    with LiveServer(replace(settings, open_access=True, custom_nodes_dirs=custom)) as live:
        yield live


def graph(mode: Any = "invert", times: Any = 2) -> dict[str, Any]:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0xFF0000},
        },
        "2": {
            "class_type": "ExampleV3ImageAdjust",
            "inputs": {"image": ["1", 0], "mode": mode, "amount": 1.0},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "v3"}},
        "4": {"class_type": "ExampleTextCase", "inputs": {"text": "ab", "case": "upper"}},
        "5": {
            "class_type": "ExampleV3TextJoin",
            "inputs": {"text_a": ["4", 0], "use_b": True, "text_b": "cd", "separator": "+", "times": times},
        },
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 0]}},
    }


def test_object_info_lists_v3_nodes_in_comfyuis_v3_shape(v3_server: LiveServer) -> None:
    with v3_server.client() as client:
        info = client.get("/object_info").json()
        one = client.get("/api/object_info/ExampleV3TextJoin").json()
    assert set(info["ExampleV3ImageAdjust"]) == set(index("object_info")["ImageStitch"])
    assert one == {"ExampleV3TextJoin": info["ExampleV3TextJoin"]}
    assert one["ExampleV3TextJoin"]["input"]["required"]["times"] == [
        "INT",
        {"default": 1, "min": 1, "max": 10},
    ]
    assert "ExampleTextCase" in info  # the V1 package still loads beside it


def test_post_prompt_runs_a_graph_mixing_v1_and_v3_nodes(v3_server: LiveServer) -> None:
    with ComfyClient(v3_server.url) as client:
        prompt_id = client.queue(graph())
        client.until_done(prompt_id)
        history = client.history(prompt_id)[prompt_id]
        assert history["status"]["status_str"] == "success"
        (saved,) = history["outputs"]["3"]["images"]
        pixels = Image.open(io.BytesIO(client.image(saved, v3_server.settings.base_dir / "output")))
    assert pixels.convert("RGB").getpixel((3, 3)) == (0, 255, 255)  # red inverted is cyan
    assert history["outputs"]["6"] == {"text": ["AB+cd+AB+cd"]}


@pytest.mark.parametrize(
    ("mode", "times", "node", "kind", "name"),
    [
        ("sepia", 2, "2", "value_not_in_list", "mode"),
        ("../../etc/passwd", 2, "2", "value_not_in_list", "mode"),
        (["1", 0], 2, "2", "return_type_mismatch", "mode"),
        ("invert", 11, "5", "value_bigger_than_max", "times"),
        ("invert", 10**30, "5", "value_bigger_than_max", "times"),
        ("invert", -(10**30), "5", "value_smaller_than_min", "times"),
        ("invert", "NaN", "5", "invalid_input_type", "times"),
    ],
)
def test_bad_v3_inputs_are_comfyui_shaped_400s(
    v3_server: LiveServer, mode: Any, times: Any, node: str, kind: str, name: str
) -> None:
    branch = (
        ("1", "2", "3") if node == "2" else ("4", "5", "6")
    )  # ComfyUI runs a prompt if any output is valid
    prompt = {key: value for key, value in graph(mode, times).items() if key in branch}
    with v3_server.client() as client:
        response = client.post("/prompt", json={"prompt": prompt})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    (error,) = body["node_errors"][node]["errors"]
    assert (error["type"], error["extra_info"]["input_name"]) == (kind, name)
