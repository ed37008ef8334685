"""API prompt -> editor workflow: the editor's own saves of ComfyUI's examples are what it must look like,
and converting it back (workflow.py, checked against ComfyUI's conversions) must give the prompt again."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from engine.graph.registry import NodeRegistry
from engine.graph.types import Prompt
from engine.graph.workflow import CONTROL_VALUES, EDITOR_ONLY_NODES, WorkflowError, workflow_to_prompt
from engine.graph.workflow_from_prompt import prompt_to_workflow

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "tests" / "diffusion" / "comfy_examples"
EXAMPLE_NAMES = sorted(path.name.removesuffix(".workflow.json") for path in EXAMPLES.glob("*.workflow.json"))
TEMPLATES = sorted(REPO.glob("graphs/**/*.json"))


def without_titles(prompt: Prompt) -> dict[str, Any]:
    return {node_id: {"class_type": n["class_type"], "inputs": n["inputs"]} for node_id, n in prompt.items()}


def editor_widgets(values: list[Any]) -> list[Any]:
    """Widget values with the editor's control mode left out (ComfyUI saved "randomize", we write "fixed")."""
    return [value for value in values if value not in CONTROL_VALUES]


def link_set(workflow: dict[str, Any]) -> set[tuple[Any, ...]]:
    """Links between real nodes as (origin, slot, target, input name, type)."""
    nodes = {node["id"]: node for node in workflow["nodes"]}
    found = set()
    for link_id, origin, slot, target, target_slot, kind in workflow["links"]:
        if nodes[origin]["type"] in EDITOR_ONLY_NODES or nodes[target]["type"] in EDITOR_ONLY_NODES:
            continue
        port = nodes[target]["inputs"][target_slot]
        assert port["link"] == link_id
        found.add((origin, slot, target, port["name"], kind))
    return found


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_comfyui_examples_lay_out_as_the_editor_saved_them(name: str, registry: NodeRegistry) -> None:
    saved = json.loads((EXAMPLES / f"{name}.workflow.json").read_text())
    prompt = json.loads((EXAMPLES / f"{name}.prompt.json").read_text())
    laid_out = prompt_to_workflow(prompt, registry)
    ours = {node["id"]: node for node in laid_out.workflow["nodes"]}
    theirs = {node["id"]: node for node in saved["nodes"] if node["type"] not in EDITOR_ONLY_NODES}
    assert laid_out.ids == {node_id: int(node_id) for node_id in prompt}
    assert sorted(ours) == sorted(theirs)
    for node_id, node in theirs.items():
        assert ours[node_id]["type"] == node["type"]
        assert editor_widgets(ours[node_id]["widgets_values"]) == editor_widgets(
            node.get("widgets_values") or []
        )
        assert [o["type"] for o in ours[node_id]["outputs"]] == [o["type"] for o in node.get("outputs") or []]
    assert link_set(laid_out.workflow) == link_set(saved)
    assert without_titles(workflow_to_prompt(laid_out.workflow, registry)) == without_titles(prompt)


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: path.stem)
def test_shipped_templates_round_trip(path: Path, registry: NodeRegistry) -> None:
    prompt = json.loads(path.read_text())["prompt"]
    workflow = prompt_to_workflow(prompt, registry).workflow
    back = workflow_to_prompt(workflow, registry)
    assert back == prompt  # titles included: each node's _meta title is the editor node's title
    json.dumps(workflow, allow_nan=False)  # a file the editor can read


def test_seed_and_combo_carry_the_control_slots(registry: NodeRegistry) -> None:
    """KSampler's seed is followed by its control mode; the converter skips it by position."""
    prompt: Prompt = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "a.safetensors"}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 7,
                "steps": 2,
                "cfg": 1.5,
                "sampler_name": "euler",
                "scheduler": "simple",
                "denoise": 1.0,
                "model": ["4", 0],
                "positive": ["4", 0],
                "negative": ["4", 0],
                "latent_image": ["4", 0],
            },
        },
    }
    workflow = prompt_to_workflow(prompt, registry).workflow
    sampler = next(node for node in workflow["nodes"] if node["type"] == "KSampler")
    assert sampler["widgets_values"] == [7, "fixed", 2, 1.5, "euler", "simple", 1.0]
    loader = next(node for node in workflow["nodes"] if node["type"] == "CheckpointLoaderSimple")
    assert loader["pos"][0] < sampler["pos"][0]  # the source is in an earlier column
    assert without_titles(workflow_to_prompt(workflow, registry)) == without_titles(prompt)


def test_ids_that_are_not_integers_are_renumbered(registry: NodeRegistry) -> None:
    prompt: Prompt = {
        "image": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 5},
        },
        "3:save": {"class_type": "SaveImage", "inputs": {"filename_prefix": "x", "images": ["image", 0]}},
    }
    laid_out = prompt_to_workflow(prompt, registry)
    assert laid_out.ids == {"image": 1, "3:save": 2}
    renamed = {str(laid_out.ids[node_id]): copy.deepcopy(node) for node_id, node in prompt.items()}
    renamed["2"]["inputs"]["images"] = ["1", 0]
    assert without_titles(workflow_to_prompt(laid_out.workflow, registry)) == without_titles(renamed)


def test_a_list_widget_value_is_unwrapped_and_wrapped_back(registry: NodeRegistry) -> None:
    prompt: Prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": {"__value__": [8]}, "height": 8}},
    }
    workflow = prompt_to_workflow(prompt, registry).workflow
    assert workflow["nodes"][0]["widgets_values"][:2] == [[8], 8]
    assert workflow_to_prompt(workflow, registry)["1"]["inputs"]["width"] == {"__value__": [8]}


@pytest.mark.parametrize(
    ("prompt", "named"),
    [
        ({"1": {"class_type": "NoSuchNode", "inputs": {}}}, "NoSuchNode"),
        ({"1": {"class_type": "EmptyImage", "inputs": {"widht": 8}}}, "widht"),
        ({"1": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}}, "node 9"),
        (
            {
                "1": {"class_type": "EmptyImage", "inputs": {}},
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 3]}},
            },
            "output 3 of node 1",
        ),
        (
            {
                "1": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0]}},
                "2": {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0]}},
            },
            "cycle",
        ),
    ],
    ids=["unknown node", "unknown input", "missing source", "missing output", "cycle"],
)
def test_what_the_editor_cannot_draw_is_refused_by_name(
    prompt: Prompt, named: str, registry: NodeRegistry
) -> None:
    with pytest.raises(WorkflowError, match=named):
        prompt_to_workflow(prompt, registry)
