"""The warm-up request: each shipped template at its smallest size, batch and step count, read here from
the template files themselves; and it still passes graph validation."""

from __future__ import annotations

import json
import math
from typing import Any

from engine.endpoints import Endpoint
from engine.endpoints.warm_up import warm_up_params
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt

COST_INPUTS = ("width", "height", "batch_size", "steps")


def smallest_bound_inputs(template: dict[str, Any]) -> dict[tuple[str, str], Any]:
    """(node, input) -> the least value the template's fields allow it, for the size and step inputs."""
    expected: dict[tuple[str, str], Any] = {}
    for field in template["fields"].values():
        for node, name in field.get("sets", []):
            if name in COST_INPUTS:
                expected[node, name] = field["minimum"]
        derive = field.get("derive")
        if derive:
            area = {key: math.prod(row.values()) for key, row in derive["table"].items()}
            smallest = derive["table"][min(area, key=area.__getitem__)]
            for component, refs in derive["sets"].items():
                for node, name in refs:
                    expected[node, name] = smallest[component]
    return expected


def test_each_template_warms_up_at_its_smallest_size_and_one_step(
    endpoints: dict[str, Endpoint], registry: NodeRegistry
) -> None:
    for endpoint in endpoints.values():
        template = json.loads(endpoint.source.read_text())
        prompt = endpoint.build(warm_up_params(endpoint), output_prefix="warm-up/x")
        expected = smallest_bound_inputs(template)
        assert {ref: prompt[ref[0]]["inputs"][ref[1]] for ref in expected} == expected, endpoint.id
        assert validate_prompt(registry, prompt).ok, endpoint.id


def test_the_warm_up_sizes_are_the_least_the_apis_accept(endpoints: dict[str, Endpoint]) -> None:
    flux_dev = endpoints["flux-dev"].build(warm_up_params(endpoints["flux-dev"]), output_prefix="w")
    assert flux_dev["17"]["inputs"]["steps"] == 1  # BasicScheduler
    assert (flux_dev["27"]["inputs"]["width"], flux_dev["27"]["inputs"]["height"]) == (512, 512)
    flux_pro = endpoints["flux-pro"].build(warm_up_params(endpoints["flux-pro"]), output_prefix="w")
    assert (flux_pro["27"]["inputs"]["width"], flux_pro["27"]["inputs"]["height"]) == (1536, 640)  # 21:9
    fal = endpoints["fal-ai/aura-flow"]
    assert warm_up_params(fal).values["num_inference_steps"] == 1
    assert warm_up_params(fal).values["seed"] == 0  # the random field keeps its fixed default
