"""The shipped templates load against the node definitions, offer the seeds' fields, ranges and defaults,
and every request they accept builds a graph that validates; the model-free one runs end to end."""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from engine import folders
from engine.endpoints import Endpoint, Field, Params, load_endpoints
from engine.graph.execute import Executor
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from tests.endpoints.conftest import GRAPHS

SHIPPED = {
    "aura-flow": ("segmind",),
    "flux-schnell": ("segmind",),
    "flux-pro": ("segmind",),
    "flux-dev": ("segmind",),
    "fal-ai/aura-flow": ("fal",),
    "solid-color": ("segmind",),
}


def bounds(endpoint: Endpoint, name: str) -> tuple[Any, Any, Any]:
    field = endpoint.fields[name]
    return field.minimum, field.maximum, field.default


def test_every_shipped_template_loads_and_is_available_with_its_model_files(
    endpoints: dict[str, Endpoint],
) -> None:
    assert {endpoint_id: e.apis for endpoint_id, e in endpoints.items()} == SHIPPED
    assert {endpoint_id: e.unavailable for endpoint_id, e in endpoints.items()} == dict.fromkeys(SHIPPED)


def test_without_model_files_model_endpoints_are_unavailable_and_name_the_missing_file(
    registry: NodeRegistry, workdir: folders.FolderSettings
) -> None:
    endpoints = load_endpoints(GRAPHS, registry)
    assert endpoints["solid-color"].unavailable is None
    assert "aura_flow_0.3.safetensors" in (endpoints["aura-flow"].unavailable or "")
    assert "aura_flow_0.3.safetensors" in (endpoints["fal-ai/aura-flow"].unavailable or "")
    assert "flux1-schnell.safetensors" in (endpoints["flux-schnell"].unavailable or "")
    for endpoint_id in ("flux-dev", "flux-pro"):
        reason = endpoints[endpoint_id].unavailable or ""
        assert all(
            name in reason for name in ("flux1-dev.safetensors", "t5xxl_fp16", "clip_l", "ae.safetensors")
        )


def test_aura_flow_has_the_segmind_fields_ranges_and_defaults(endpoints: dict[str, Endpoint]) -> None:
    aura = endpoints["aura-flow"]
    assert bounds(aura, "cfg") == (0, 20, 5)
    assert bounds(aura, "shift") == (0.01, 10, 1.73)
    assert bounds(aura, "steps") == (1, 100, 25)
    assert bounds(aura, "width") == bounds(aura, "height") == (512, 2048, 1024)
    assert bounds(aura, "output_quality") == (0, 100, 80)
    assert bounds(aura, "number_of_images") == (1, 10, 1)
    assert aura.fields["negative_prompt"].default == ""
    assert aura.fields["output_format"].enum == ("webp", "jpg", "png")
    assert aura.fields["output_format"].default == "webp"
    assert aura.fields["scheduler"].enum == (
        "normal",
        "karras",
        "exponential",
        "sgm_uniform",
        "simple",
        "ddim_uniform",
    )
    assert aura.fields["scheduler"].default == "normal"
    assert aura.fields["seed"].random


def test_aura_flow_offers_the_segmind_samplers_all_known_to_ksampler(
    endpoints: dict[str, Endpoint], registry: NodeRegistry
) -> None:
    samplers = endpoints["aura-flow"].fields["sampler"]
    shown_by_segmind = [
        "euler",
        "euler_cfg_pp",
        "euler_ancestral",
        "euler_ancestral_cfg_pp",
        "heun",
        "heunpp2",
    ]
    assert list(samplers.enum or ())[:6] == shown_by_segmind
    assert samplers.default == "uni_pc" and len(samplers.enum or ()) == 27
    ksampler_choices = registry.definition("KSampler").inputs["sampler_name"].choices or ()
    assert set(samplers.enum or ()) <= set(ksampler_choices)


def test_flux_endpoints_have_the_seeds_fields(endpoints: dict[str, Endpoint]) -> None:
    pro = endpoints["flux-pro"]
    assert pro.fields["prompt"].required
    assert bounds(pro, "guidance") == (2, 5, 3)
    assert bounds(pro, "steps") == (1, 50, 25)
    assert bounds(pro, "interval") == (1, 4, 2)
    assert bounds(pro, "safety_tolerance") == (1, 5, 2)
    assert {name for name, f in pro.fields.items() if f.affects_price} == {
        "guidance",
        "steps",
        "interval",
        "safety_tolerance",
    }
    assert set(pro.fields["aspect_ratio"].enum or ()) == {
        "21:9", "16:9", "3:2", "4:3", "5:4", "1:1", "4:5", "3:4", "2:3", "9:16", "9:21",
    }  # fmt: skip
    assert pro.fields["aspect_ratio"].default == "1:1"
    assert pro.fields["interval"].accepted_only and pro.fields["safety_tolerance"].accepted_only
    assert "changes nothing in the image" in pro.fields["interval"].description

    schnell = endpoints["flux-schnell"]
    assert bounds(schnell, "steps") == (1, 8, 4)
    assert bounds(schnell, "denoise") == (0.0008, 1, 1)
    assert bounds(schnell, "width") == (512, 2048, 1024) and schnell.fields["width"].multiple_of == 8
    assert (
        schnell.fields["sampler_name"].default == "euler" and schnell.fields["scheduler"].default == "normal"
    )
    assert schnell.fields["samples"].default == 1
    assert schnell.output_format(schnell.defaults()).content_type == "image/jpeg"

    dev = endpoints["flux-dev"]
    assert dev.fields["guidance"].default == 3.5
    assert 20 <= dev.fields["steps"].default <= 28


def test_fal_aura_flow_has_fal_fields_and_echoes_seed_and_prompt(endpoints: dict[str, Endpoint]) -> None:
    fal = endpoints["fal-ai/aura-flow"]
    assert fal.fields["prompt"].required
    defaults = fal.defaults().values
    assert (defaults["num_images"], defaults["guidance_scale"], defaults["num_inference_steps"]) == (
        1,
        3.5,
        50,
    )
    assert defaults["expand_prompt"] is True and fal.fields["expand_prompt"].accepted_only
    assert fal.echo == ("seed", "prompt")
    params = fal.parse({"prompt": "an iguana", "seed": 7}, strings=False)
    assert fal.echoed(params) == {"seed": 7, "prompt": "an iguana"}


def _longest(field: Field) -> str:
    """The longest run of "a" the field accepts: as many characters as allowed, or tokens."""
    length = field.max_length or 1
    if field.max_tokens is not None:
        count, maximum = field.max_tokens.count, field.max_tokens.maximum
        fits = bisect.bisect_right(range(length + 1), False, key=lambda n: count("a" * n) > maximum) - 1
        length = min(length, fits)
    return "a" * length


def _extremes(endpoint: Endpoint) -> list[Params]:
    """Accepted requests with every field at its minimum, every field at its maximum, and each enum value."""
    low: dict[str, Any] = {}
    high: dict[str, Any] = {}
    variants: list[dict[str, Any]] = []
    for name, field in endpoint.fields.items():
        if field.enum is not None:
            variants += [{name: value} for value in field.enum]
        elif field.type == "integer":
            low[name] = field.minimum
            high[name] = field.maximum - field.maximum % (field.multiple_of or 1)
        elif field.type == "number":
            low[name], high[name] = field.minimum, field.maximum
        elif field.type == "string":
            low[name], high[name] = "a", _longest(field)
        else:
            low[name], high[name] = False, True
    required = {name: "a" for name, field in endpoint.fields.items() if field.required}
    return [endpoint.parse({**required, **values}, strings=False) for values in (low, high, *variants)]


@pytest.mark.parametrize("endpoint_id", sorted(SHIPPED))
def test_every_value_a_request_may_send_builds_a_graph_that_validates(
    endpoints: dict[str, Endpoint], registry: NodeRegistry, endpoint_id: str
) -> None:
    endpoint = endpoints[endpoint_id]
    for params in _extremes(endpoint):
        prompt = endpoint.build(params, output_prefix="api/job")
        result = validate_prompt(registry, prompt)
        assert result.ok, (params.values, result.node_errors_json())


@pytest.mark.parametrize("image_format", ["png", "webp", "jpg"])
def test_solid_color_runs_end_to_end_into_the_requested_file(
    endpoints: dict[str, Endpoint], registry: NodeRegistry, workdir: folders.FolderSettings, image_format: str
) -> None:
    endpoint = endpoints["solid-color"]
    form = {
        "width": "48",
        "height": "32",
        "color": str(0x3366CC),
        "batch": "2",
        "output_format": image_format,
    }
    params = endpoint.parse({**form, "output_quality": "90"}, strings=True)
    validated = validate_prompt(registry, endpoint.build(params, output_prefix="api/job-1")).validated
    assert validated is not None
    result = Executor(registry).run(validated, prompt_id="job-1")
    assert result.status == "success"
    images = result.outputs[endpoint.output.node]["images"]
    assert [image["filename"] for image in images] == [
        f"job-1_00001_.{image_format}",
        f"job-1_00002_.{image_format}",
    ]
    for image in images:
        path = Path(workdir.output_dir, image["subfolder"], image["filename"])
        assert image["subfolder"] == "api" and image["size"] == path.stat().st_size
        assert image["content_type"] == endpoint.output_format(params).content_type
        with Image.open(path) as picture:
            assert picture.size == (48, 32)
            red, green, blue = picture.convert("RGB").getpixel((10, 10))
        assert abs(red - 0x33) <= 3 and abs(green - 0x66) <= 3 and abs(blue - 0xCC) <= 3
