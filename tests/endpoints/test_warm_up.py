"""The warm-up graph: each shipped template with its size, batch and step inputs at the least value
ComfyUI's own nodes declare (read from ComfyUI's recorded /object_info, not from the engine), every
other input as a request with defaults would have it; and it still passes graph validation."""

from __future__ import annotations

from typing import Any

from engine.endpoints import Endpoint
from engine.endpoints.warm_up import warm_up_prompt
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from tests.comfy_fixtures import index

SIZE_AND_STEPS = ("width", "height", "batch_size", "steps")


def comfy_minimum(class_type: str, name: str) -> Any:
    inputs = index("object_info")[class_type]["input"]
    declared = {**inputs.get("required", {}), **inputs.get("optional", {})}[name]
    return declared[1]["min"]


def test_each_template_warms_up_at_its_nodes_least_size_and_steps(
    endpoints: dict[str, Endpoint], registry: NodeRegistry
) -> None:
    shrunk = 0
    for endpoint in endpoints.values():
        request = endpoint.build(endpoint.defaults(), output_prefix="warm-up/x")
        prompt = warm_up_prompt(endpoint, registry, output_prefix="warm-up/x")
        for node_id, node in prompt.items():
            for name, value in node["inputs"].items():
                requested = request[node_id]["inputs"][name]
                if name in SIZE_AND_STEPS and isinstance(requested, int) and not isinstance(requested, bool):
                    assert value == comfy_minimum(node["class_type"], name), (endpoint.id, node_id, name)
                    shrunk += 1
                else:
                    assert value == requested, (endpoint.id, node_id, name)
        assert validate_prompt(registry, prompt).ok, endpoint.id
    assert shrunk >= 3 * len(endpoints)  # every template has at least a width, a height and a step count


def test_fal_aura_flow_which_has_no_size_field_warms_up_tiny(
    endpoints: dict[str, Endpoint], registry: NodeRegistry
) -> None:
    prompt = warm_up_prompt(endpoints["fal-ai/aura-flow"], registry, output_prefix="w")
    latents = [node["inputs"] for node in prompt.values() if node["class_type"] == "EmptyLatentImage"]
    assert [(inputs["width"], inputs["height"], inputs["batch_size"]) for inputs in latents] == [(16, 16, 1)]
    steps = [node["inputs"]["steps"] for node in prompt.values() if "steps" in node["inputs"]]
    assert steps == [1]


def test_a_compiling_engine_warms_up_at_the_default_size_with_the_least_steps(
    endpoints: dict[str, Endpoint], registry: NodeRegistry
) -> None:
    """The warm-up compiles the transformer for the shapes it runs, so it runs the size requests ask for."""
    endpoint = endpoints["fal-ai/aura-flow"]
    request = endpoint.build(endpoint.defaults(), output_prefix="w")
    prompt = warm_up_prompt(endpoint, registry, output_prefix="w", keep_shapes=True)
    latents = [node["inputs"] for node in prompt.values() if node["class_type"] == "EmptyLatentImage"]
    assert [(inputs["width"], inputs["height"], inputs["batch_size"]) for inputs in latents] == [
        (1024, 1024, 1)
    ]
    steps = [node["inputs"]["steps"] for node in prompt.values() if "steps" in node["inputs"]]
    assert steps == [comfy_minimum("KSampler", "steps")]
    assert [n["inputs"]["steps"] for n in request.values() if "steps" in n["inputs"]] != steps
