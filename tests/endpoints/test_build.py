"""Building a request's prompt: fields land on the inputs they declare, derived fields on every node they
name, the output becomes a SaveImageAs under the caller's prefix, the template never changes; and the
price moves with the fields marked as affecting it, and with nothing else."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from engine.endpoints import SAVE_NODE, Endpoint, load_endpoints
from engine.folders import PathEscapeError
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from tests.endpoints.samples import AURA_SAMPLE, FLUX_PRO_SAMPLE, FLUX_SCHNELL_SAMPLE, SOLID, write


def inputs_of(prompt: dict[str, Any], class_type: str) -> dict[str, Any]:
    (node,) = [node for node in prompt.values() if node["class_type"] == class_type]
    return node["inputs"]


def test_the_aura_flow_sample_sets_its_values_and_validates(
    endpoints: dict[str, Endpoint], registry: NodeRegistry
) -> None:
    aura = endpoints["aura-flow"]
    prompt = aura.build(aura.parse(AURA_SAMPLE, strings=False), output_prefix="api/job-7")
    sampler = inputs_of(prompt, "KSampler")
    assert (sampler["seed"], sampler["steps"], sampler["cfg"]) == (2425367, 25, 5.0)
    assert (sampler["sampler_name"], sampler["scheduler"]) == ("uni_pc", "normal")
    assert inputs_of(prompt, "ModelSamplingAuraFlow")["shift"] == 1.73
    assert inputs_of(prompt, "EmptyLatentImage") == {"width": 1024, "height": 1024, "batch_size": 1}
    texts = {prompt[node]["inputs"]["text"] for node in ("6", "7")}
    assert texts == {AURA_SAMPLE["prompt"], ""}
    assert validate_prompt(registry, prompt).ok


def test_aspect_ratio_sets_width_and_height_on_every_node_it_names(endpoints: dict[str, Endpoint]) -> None:
    pro = endpoints["flux-pro"]
    prompt = pro.build(
        pro.parse({**FLUX_PRO_SAMPLE, "aspect_ratio": "16:9"}, strings=False), output_prefix="a"
    )
    for class_type in ("EmptySD3LatentImage", "ModelSamplingFlux"):
        inputs = inputs_of(prompt, class_type)
        assert (inputs["width"], inputs["height"]) == (1344, 768)
    portrait = pro.build(pro.parse({"prompt": "x", "aspect_ratio": "9:21"}, strings=False), output_prefix="a")
    for class_type in ("EmptySD3LatentImage", "ModelSamplingFlux"):
        inputs = inputs_of(portrait, class_type)
        assert (inputs["width"], inputs["height"]) == (640, 1536)


def test_a_field_bound_to_several_inputs_sets_them_all(endpoints: dict[str, Endpoint]) -> None:
    dev = endpoints["flux-dev"]
    prompt = dev.build(
        dev.parse({"prompt": "x", "width": 768, "height": 1344}, strings=False), output_prefix="a"
    )
    for class_type in ("EmptySD3LatentImage", "ModelSamplingFlux"):
        inputs = inputs_of(prompt, class_type)
        assert (inputs["width"], inputs["height"]) == (768, 1344)


@pytest.mark.parametrize(
    ("endpoint_id", "field", "class_type"),
    [
        ("aura-flow", "number_of_images", "EmptyLatentImage"),
        ("flux-schnell", "samples", "EmptySD3LatentImage"),
        ("flux-dev", "samples", "EmptySD3LatentImage"),
        ("fal-ai/aura-flow", "num_images", "EmptyLatentImage"),
    ],
)
def test_the_image_count_is_the_batch_size(
    endpoints: dict[str, Endpoint], endpoint_id: str, field: str, class_type: str
) -> None:
    endpoint = endpoints[endpoint_id]
    prompt = endpoint.build(endpoint.parse({"prompt": "x", field: 3}, strings=False), output_prefix="a")
    assert inputs_of(prompt, class_type)["batch_size"] == 3


def test_the_seed_drawn_for_a_request_is_the_one_in_its_graph(endpoints: dict[str, Endpoint]) -> None:
    schnell = endpoints["flux-schnell"]
    params = schnell.parse({"prompt": "x"}, strings=False)
    assert inputs_of(schnell.build(params, output_prefix="a"), "RandomNoise")["noise_seed"] == params.seed


@pytest.mark.parametrize(
    ("endpoint_id", "request_values", "expected"),
    [
        ("aura-flow", {"output_format": "png", "output_quality": 55}, ("png", 55, "image/png")),
        ("aura-flow", {}, ("webp", 80, "image/webp")),
        ("flux-pro", {"prompt": "x", "output_format": "jpg"}, ("jpg", 80, "image/jpeg")),
        ("flux-schnell", FLUX_SCHNELL_SAMPLE, ("jpg", 90, "image/jpeg")),
        ("fal-ai/aura-flow", {"prompt": "x"}, ("png", 80, "image/png")),
    ],
)
def test_the_output_node_becomes_save_image_as_with_format_quality_and_prefix(
    endpoints: dict[str, Endpoint],
    endpoint_id: str,
    request_values: dict[str, Any],
    expected: tuple[str, int, str],
) -> None:
    endpoint = endpoints[endpoint_id]
    params = endpoint.parse(request_values, strings=False)
    prompt = endpoint.build(params, output_prefix="api/0f3c")
    node = prompt[endpoint.output.node]
    template_node = endpoint.graph[endpoint.output.node]
    assert template_node["class_type"] == "SaveImage"
    assert node["class_type"] == SAVE_NODE
    assert node["inputs"] == {
        "images": template_node["inputs"]["images"],
        "filename_prefix": "api/0f3c",
        "format": expected[0],
        "quality": expected[1],
    }
    assert endpoint.output_format(params).content_type == expected[2]
    assert [n["class_type"] for n in prompt.values()].count("SaveImage") == 0


def test_building_never_changes_the_template_and_prompts_are_independent(
    endpoints: dict[str, Endpoint],
) -> None:
    pro = endpoints["flux-pro"]
    template = copy.deepcopy(pro.graph)
    first = pro.build(
        pro.parse({"prompt": "a", "aspect_ratio": "21:9", "steps": 5}, strings=False), output_prefix="a"
    )
    first["6"]["inputs"]["text"] = "changed afterwards"
    first["27"]["inputs"]["width"] = 16
    second = pro.build(pro.parse({"prompt": "b"}, strings=False), output_prefix="b")
    assert pro.graph == template
    assert second["6"]["inputs"]["text"] == "b" and second["27"]["inputs"]["width"] == 1024


@pytest.mark.parametrize("prefix", ["../outside", "/etc/cron.d/x", "api/../../x", ""])
def test_a_prefix_that_would_leave_the_output_folder_is_refused(
    endpoints: dict[str, Endpoint], prefix: str
) -> None:
    endpoint = endpoints["solid-color"]
    with pytest.raises(PathEscapeError):
        endpoint.build(endpoint.defaults(), output_prefix=prefix)


def _two_values(endpoint: Endpoint, name: str) -> list[Any]:
    """Two accepted values of a field, as far apart as it allows."""
    field = endpoint.fields[name]
    if field.enum is not None:
        return [field.enum[0], field.enum[-1]]
    if field.type == "boolean":
        return [True, False]
    if field.type == "string":
        return ["one prompt", "another prompt"]
    top = field.maximum
    if field.type == "integer" and field.multiple_of:
        top -= top % field.multiple_of
    return [field.minimum, top]


@pytest.mark.parametrize(
    "endpoint_id", ["aura-flow", "flux-pro", "flux-schnell", "flux-dev", "fal-ai/aura-flow"]
)
def test_the_price_depends_on_the_price_fields_only(endpoints: dict[str, Endpoint], endpoint_id: str) -> None:
    endpoint = endpoints[endpoint_id]
    base = {"prompt": "a fox"}
    reference = endpoint.cost(endpoint.parse(base, strings=False))
    assert reference > 0
    for name, field in endpoint.fields.items():
        costs = {
            endpoint.cost(endpoint.parse({**base, name: v}, strings=False))
            for v in _two_values(endpoint, name)
        }
        if field.affects_price:
            assert len(costs) == 2, name
        else:
            assert costs == {reference}, name


def test_the_price_scales_with_images_and_pixels(endpoints: dict[str, Endpoint]) -> None:
    aura = endpoints["aura-flow"]

    def cost(**values: Any) -> float:
        return aura.cost(aura.parse(values, strings=False))

    assert cost(number_of_images=4) == pytest.approx(4 * cost())
    assert cost(width=2048, height=2048) == pytest.approx(4 * cost(width=1024, height=1024))
    assert cost(steps=50) > cost(steps=25) > cost(steps=1)


def test_a_price_table_and_a_minimum_price(tmp_path: Path, registry: NodeRegistry) -> None:
    template = copy.deepcopy(SOLID)
    template["fields"]["output_format"]["affects_price"] = True
    template["pricing"] = {
        "base": 0.001,
        "add": [{"field": "output_format", "table": {"png": 0.002, "webp": 0}}],
        "multiply": [{"field": "batch"}],
        "minimum": 0.0015,
    }
    write(tmp_path, "solid", template)
    solid = load_endpoints(tmp_path, registry)["solid"]

    def cost(**values: Any) -> float:
        return solid.cost(solid.parse(values, strings=False))

    assert cost(output_format="png", batch=2) == pytest.approx(0.006)
    assert cost(output_format="webp", batch=1) == pytest.approx(0.0015)
    assert solid.pricing.describe() == "(0.001 + output_format (by table)) * batch, at least 0.0015"


def test_flux_pro_charges_for_interval_and_safety_tolerance_as_segmind_does(
    endpoints: dict[str, Endpoint],
) -> None:
    pro = endpoints["flux-pro"]
    sample = pro.parse(FLUX_PRO_SAMPLE, strings=False)
    higher = pro.parse({**FLUX_PRO_SAMPLE, "interval": 4, "safety_tolerance": 5}, strings=False)
    assert pro.cost(higher) > pro.cost(sample)
    assert pro.build(higher, output_prefix="a") == pro.build(sample, output_prefix="a")
