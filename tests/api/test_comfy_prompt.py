"""POST /prompt answers as ComfyUI's does: the 30 recorded cases of comfy-fixtures/validation.json byte
for byte where the engine agrees with ComfyUI, the same shape where it deliberately does not; a node
that raises reports execution_error over the websocket and "error" in the history; and a hostile body
is a 400 in ComfyUI's error shape, never a 500.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from engine.jobs.store import JobQuery
from engine.settings import Settings
from tests.api.comfy_client import ComfyClient, texts
from tests.api.conftest import LiveServer
from tests.comfy_fixtures import index

CASES = {case["name"]: case for case in index("validation")["cases"]}
DEVIATIONS = {
    "flux_schnell_no_model_files": (
        400,
        "ComfyUI lists a node's errors in the order of a Python set of input names, and its VAELoader "
        "offers 'pixel_space', which the engine's does not",
    ),
    "values_cast_in_place": (400, "ComfyUI truncates the INT 7.9 to 7; the engine refuses a fractional INT"),
    "link_to_missing_node": (
        400,
        "ComfyUI's KeyError becomes exception_during_inner_validation on the linked node; the engine "
        "reports bad_linked_input on the node holding the link",
    ),
    "link_output_index_out_of_range": (400, "as link_to_missing_node, for ComfyUI's IndexError"),
    "inner_link_output_index_out_of_range": (400, "as link_to_missing_node, for ComfyUI's IndexError"),
    "cycle": (400, "ComfyUI recurses into RecursionError and answers with no node errors"),
    "validate_inputs_raises": (
        200,
        "ComfyUI files a raising VALIDATE_INPUTS under the downstream node's input, as an inner error",
    ),
    "validate_inputs_raises_only_output": (400, "as validate_inputs_raises"),
    "prompt_is_a_list": (
        400,
        "ComfyUI's handler raises (HTTP 500); the engine answers 400 in its error shape",
    ),
}
"""Cases where the engine's answer differs on purpose (tests/graph/test_comfy_validation.py holds the
verdicts); each is still checked for status and shape."""

PLAIN = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 7}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "plain"}},
}
FAILING = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
    "2": {"class_type": "FailingImages", "inputs": {"images": ["1", 0]}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "never"}},
}


@pytest.fixture(scope="module")
def fixture_server(tmp_path_factory: pytest.TempPathFactory, graphs_dir: Path) -> Iterator[LiveServer]:
    """A server whose model folder holds what each case's ComfyUI had: its model files, empty."""
    base = tmp_path_factory.mktemp("fixture-server")
    settings = Settings(
        base_dir=base,
        models_dir=base / "models",
        graphs_dir=graphs_dir,
        custom_nodes_dirs=(Path(__file__).parent / "custom_nodes",),
        test_models=False,
        warmup_endpoints=(),
        open_access=True,
    )
    (base / "input").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(base / "input" / "fixture.png")
    with LiveServer(settings) as live:
        yield live


def error_shape(body: dict[str, Any]) -> bool:
    return set(body) == {"error", "node_errors"} and set(body["error"]) == {
        "type",
        "message",
        "details",
        "extra_info",
    }


@pytest.mark.parametrize("name", list(CASES))
def test_recorded_case(fixture_server: LiveServer, name: str) -> None:
    case = CASES[name]
    models = fixture_server.settings.models_dir
    assert models is not None
    shutil.rmtree(models, ignore_errors=True)
    for folder, files in case["model_files"].items():
        (models / folder).mkdir(parents=True)
        for file in files:
            (models / folder / file).touch()
    body: dict[str, Any] = {"prompt": case["prompt"]}
    if case["partial_execution_targets"] is not None:
        body["partial_execution_targets"] = case["partial_execution_targets"]
    response = httpx.post(f"{fixture_server.url}/prompt", json=body)
    recorded = case["http"]

    if name in DEVIATIONS:
        status, why = DEVIATIONS[name]
        assert response.status_code == status, why
        answer = response.json()
        assert error_shape(answer) if status == 400 else set(answer) == {"prompt_id", "number", "node_errors"}
        assert response.content != json.dumps(recorded.get("body")).encode(), f"agrees now: drop {name}"
        return
    expected = dict(recorded["body"])
    if recorded["status"] == 200:  # the id is the server's choice and the number its counter
        expected |= {"prompt_id": response.json()["prompt_id"], "number": response.json()["number"]}
    assert response.status_code == recorded["status"]
    assert response.content == json.dumps(expected).encode()


def test_every_recorded_case_is_tried() -> None:
    assert len(CASES) == 30 and set(DEVIATIONS) <= set(CASES)


def test_a_failing_node_reports_execution_error_and_an_error_history(server: LiveServer) -> None:
    with ComfyClient(server.url) as client:
        prompt_id = client.queue(FAILING)
        frames = client.until_done(prompt_id)
        history = client.history(prompt_id)[prompt_id]
    ((kind, error),) = [(k, d) for k, d in texts(frames, prompt_id) if k.startswith("execution_e")]
    assert kind == "execution_error"
    assert list(error) == [
        "prompt_id",
        "node_id",
        "node_type",
        "executed",
        "exception_message",
        "exception_type",
        "traceback",
        "current_inputs",
        "current_outputs",
        "timestamp",
    ]
    assert (error["node_id"], error["node_type"], error["executed"]) == ("2", "FailingImages", ["1"])
    assert (error["exception_message"], error["exception_type"]) == (
        "this node fails on purpose",
        "RuntimeError",
    )
    assert "raise RuntimeError" in "".join(error["traceback"]) and "images" in error["current_inputs"]
    assert texts(frames, prompt_id)[-1] == ("executing", {"node": None, "prompt_id": prompt_id})
    assert history["status"]["status_str"] == "error" and history["status"]["completed"] is False
    assert history["status"]["messages"][-1] == ["execution_error", error]
    assert history["outputs"] == {}


def test_accepted_prompt_keeps_the_clients_id_and_extra_data(server: LiveServer) -> None:
    prompt_id = str(uuid.uuid4())
    extra = {"extra_pnginfo": {"workflow": {"id": "wf-1"}}, "api_key_comfy_org": "secret"}
    with ComfyClient(server.url) as client:
        response = client.queue_prompt(PLAIN, prompt_id=prompt_id, extra_data=extra)
        assert response.status_code == 200
        assert response.json() == {
            "prompt_id": prompt_id,
            "number": response.json()["number"],
            "node_errors": {},
        }
        client.until_done(prompt_id)
        item = client.history(prompt_id)[prompt_id]["prompt"]
    assert item[1:3] == [prompt_id, PLAIN]
    assert item[3]["client_id"] == client.client_id and item[3]["extra_pnginfo"] == extra["extra_pnginfo"]
    assert "api_key_comfy_org" not in item[3]  # credentials are never stored, as ComfyUI keeps them out
    assert isinstance(item[3]["create_time"], int)
    with Image.open(server.service.outputs.output_dir / "plain_00001_.png") as png:
        assert json.loads(png.text["workflow"]) == {"id": "wf-1"}  # extra_data reached the SaveImage node


def comfy_error(response: httpx.Response, kind: str) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert error_shape(body) and body["error"]["type"] == kind and body["node_errors"] == {}
    return dict(body["error"])


def test_hostile_bodies_are_comfyui_shaped_400s(server: LiveServer) -> None:
    url = f"{server.url}/prompt"
    post = httpx.post
    assert comfy_error(post(url, content=b"{not json"), "invalid_request")["message"].startswith(
        "the body is not valid JSON"
    )
    comfy_error(post(url, content=b"\xff\xfe"), "invalid_request")
    comfy_error(post(url, content=b"[" * 100_000 + b"]" * 100_000), "invalid_request")
    comfy_error(post(url, json=[PLAIN]), "invalid_request")
    assert comfy_error(post(url, json={}), "no_prompt") == {
        "type": "no_prompt",
        "message": "No prompt provided",
        "details": "No prompt provided",
        "extra_info": {},
    }
    comfy_error(post(url, json={"prompt": [PLAIN["1"]]}), "invalid_prompt")
    comfy_error(post(url, json={"prompt": "EmptyImage"}), "invalid_prompt")
    assert (
        comfy_error(post(url, json={"prompt": PLAIN, "prompt_id": "fixture-1"}), "invalid_prompt_id")[
            "message"
        ]
        == "prompt_id must be a valid UUID"
    )
    comfy_error(
        post(url, json={"prompt": PLAIN, "prompt_id": str(uuid.uuid4()).upper()}), "invalid_prompt_id"
    )
    for huge in (b"1e400", b"9" * 5000, b"NaN", b"-Infinity"):
        raw = b'{"prompt": {"1": {"class_type": "EmptyImage", "inputs": {"width": ' + huge + b"}}}}"
        assert comfy_error(post(url, content=raw), "invalid_request")["details"] == "prompt.1.inputs.width"
    # An integer JSON accepts but no float holds, for a FLOAT input: ComfyUI's invalid_input_type, not a 500.
    too_wide = {
        "1": {"class_type": "ManualSigmas", "inputs": {"sigmas": "1, 0"}},
        "2": {"class_type": "SplitSigmasDenoise", "inputs": {"sigmas": ["1", 0], "denoise": 10**400}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    refused = post(url, json={"prompt": too_wide})
    assert refused.status_code == 400
    (error,) = refused.json()["node_errors"]["2"]["errors"]
    assert error["type"] == "invalid_input_type" and error["extra_info"]["input_name"] == "denoise"
    for field, value in (
        ("number", 1e300),
        ("number", "abc"),
        ("number", True),
        ("front", "yes"),
        ("client_id", "x" * 300),
        ("client_id", 5),
        ("extra_data", ["x"]),
        ("partial_execution_targets", "2"),
    ):
        assert (
            field
            in comfy_error(post(url, json={"prompt": PLAIN, field: value}), "invalid_request")["message"]
        )
    too_big = json.loads(json.dumps(PLAIN))
    too_big["1"]["inputs"]["width"] = 2**70
    response = post(url, json={"prompt": too_big})
    assert response.status_code == 400
    assert response.json()["node_errors"]["1"]["errors"][0]["type"] == "value_bigger_than_max"
    assert server.call(server.service.list_jobs(JobQuery()))[1] == 0  # nothing refused was queued


def test_a_prompt_id_in_use_is_refused(server: LiveServer) -> None:
    prompt_id = str(uuid.uuid4())
    first = httpx.post(f"{server.url}/prompt", json={"prompt": PLAIN, "prompt_id": prompt_id})
    assert first.status_code == 200
    again = httpx.post(f"{server.url}/prompt", json={"prompt": PLAIN, "prompt_id": prompt_id})
    assert comfy_error(again, "invalid_prompt_id")["message"] == "prompt_id is already in use"


def test_the_api_prefix_serves_the_same_route(server: LiveServer) -> None:
    with ComfyClient(server.url) as client:
        response = client.http.post("/api/prompt", json={"prompt": PLAIN, "client_id": client.client_id})
        assert response.status_code == 200 and set(response.json()) == {"prompt_id", "number", "node_errors"}
        client.until_done(response.json()["prompt_id"])
    assert httpx.get(f"{server.url}/api/prompt").json() == {"exec_info": {"queue_remaining": 0}}
