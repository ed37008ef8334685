"""Compiling a publish declaration: what the node definitions imply comes out as ComfyUI declares it
(its recorded object_info), the publisher's narrowing is kept, and what is written loads at start-up as
the endpoint that was published."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from engine.endpoints import EndpointError, load_endpoints
from engine.endpoints.publish import PublishError, compile_template, publish, unpublish
from engine.endpoints.sharing import export_workflow, import_request
from engine.graph.registry import NodeRegistry
from engine.graph.workflow import workflow_to_prompt
from tests import comfy_fixtures
from tests.endpoints.conftest import GRAPHS

EXAMPLES = Path(__file__).resolve().parents[1] / "diffusion" / "comfy_examples"
FLUX = json.loads((GRAPHS / "flux-schnell.json").read_text())["prompt"]


def comfy_input(class_type: str, name: str) -> tuple[Any, dict[str, Any]]:
    """(type, options) of an input as ComfyUI 0.8 declares it; a combo's type is its list of choices."""
    kind, options = comfy_fixtures.index("object_info")[class_type]["input"]["required"][name]
    return (options["options"] if kind == "COMBO" else kind), options


def compiled_fields(fields: dict[str, Any], registry: NodeRegistry, **extra: Any) -> dict[str, Any]:
    request = {"name": "x", "workflow": FLUX, "fields": fields, "output": {"node": "9"}, **extra}
    return compile_template(request, registry).template["fields"]


def test_bounds_choices_steps_and_seeds_come_from_the_node_definitions(registry: NodeRegistry) -> None:
    fields = compiled_fields(
        {
            "steps": {"input": ["17", "steps"]},
            "denoise": {"input": ["17", "denoise"]},
            "scheduler": {"input": ["17", "scheduler"]},
            "width": {"input": ["27", "width"]},
            "seed": {"input": ["25", "noise_seed"]},
            "prompt": {"input": ["6", "text"], "required": True},
        },
        registry,
    )
    _, steps = comfy_input("BasicScheduler", "steps")
    assert fields["steps"] == {
        "type": "integer",
        "minimum": steps["min"],
        "maximum": steps["max"],
        "default": FLUX["17"]["inputs"]["steps"],  # the workflow's value, not the node's default
        "sets": [["17", "steps"]],
    }
    _, denoise = comfy_input("BasicScheduler", "denoise")
    assert (fields["denoise"]["type"], fields["denoise"]["minimum"], fields["denoise"]["maximum"]) == (
        "number",
        denoise["min"],
        denoise["max"],
    )
    choices, _ = comfy_input("BasicScheduler", "scheduler")
    assert fields["scheduler"]["type"] == "string" and fields["scheduler"]["enum"] == choices
    _, width = comfy_input("EmptySD3LatentImage", "width")
    assert (fields["width"]["minimum"], fields["width"]["maximum"], fields["width"]["multiple_of"]) == (
        width["min"],
        width["max"],
        width["step"],
    )
    _, seed = comfy_input("RandomNoise", "noise_seed")
    assert seed["control_after_generate"] is True
    assert fields["seed"]["random"] is True and "default" not in fields["seed"]
    assert (fields["seed"]["minimum"], fields["seed"]["maximum"]) == (seed["min"], seed["max"])
    _, text = comfy_input("CLIPTextEncode", "text")
    assert fields["prompt"]["description"] == text["tooltip"] and "default" not in fields["prompt"]


def test_what_the_publisher_says_wins(registry: NodeRegistry) -> None:
    fields = compiled_fields(
        {
            "steps": {"input": ["17", "steps"], "maximum": 8, "description": "Steps."},
            "seed": {"input": ["25", "noise_seed"], "random": False, "default": 3},
            "scheduler": {"input": ["17", "scheduler"], "enum": ["simple", "normal"]},
            "size": {
                "input": [["27", "width"], ["27", "height"]],
                "minimum": 256,
                "maximum": 512,
                "default": 512,
            },
        },
        registry,
        pricing={"base": 1, "add": [{"field": "steps", "per_unit": 0.5}]},
    )
    assert (fields["steps"]["minimum"], fields["steps"]["maximum"], fields["steps"]["description"]) == (
        1,
        8,
        "Steps.",
    )
    assert fields["steps"]["affects_price"] is True  # a price term names it
    assert fields["seed"]["default"] == 3 and fields["seed"]["random"] is False
    assert fields["scheduler"]["enum"] == ["simple", "normal"]
    assert (
        fields["size"]["sets"] == [["27", "width"], ["27", "height"]] and fields["size"]["multiple_of"] == 16
    )


def test_the_written_template_loads_at_start_up_as_the_endpoint_published(
    registry: NodeRegistry, models: Path, tmp_path: Path
) -> None:
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    request = {
        "name": "acme/flux",
        "workflow": FLUX,
        "fields": {
            "prompt": {"input": ["6", "text"], "required": True},
            "seed": {"input": ["25", "noise_seed"]},
        },
    }
    published = publish(request, graphs, registry, {})
    assert published.apis == ("segmind", "fal") and published.echo == ("prompt", "seed")
    loaded = load_endpoints(graphs, registry)["acme/flux"]
    assert loaded.published and loaded == published
    assert sorted(p.name for p in graphs.rglob("*")) == ["acme", "flux.json"]  # no temporary file left

    with pytest.raises(PublishError, match="replace") as caught:
        publish(request, graphs, registry, {"acme/flux": loaded})
    assert caught.value.kind == "conflict"
    unpublish("acme/flux", graphs, {"acme/flux": loaded})
    assert list(graphs.iterdir()) == []


def test_an_editor_workflow_publishes_the_prompt_comfyui_makes_of_it(
    registry: NodeRegistry, models: Path, tmp_path: Path
) -> None:
    """ComfyUI's Flux example, as the editor saved it: the graph served is the prompt ComfyUI made of it
    (recorded beside it), the notes dropped, and export hands the editor's own workflow back."""
    workflow = json.loads((EXAMPLES / "flux_schnell_example.workflow.json").read_text())
    expected = json.loads((EXAMPLES / "flux_schnell_example.prompt.json").read_text())
    request = {
        "name": "example",
        "workflow": workflow,
        "fields": {"prompt": {"input": ["6", "text"]}, "seed": {"input": ["25", "noise_seed"]}},
    }
    endpoint = publish(request, tmp_path, registry, {})
    assert {
        i: {"class_type": n["class_type"], "inputs": n["inputs"]} for i, n in endpoint.graph.items()
    } == expected
    assert endpoint.fields["prompt"].default == expected["6"]["inputs"]["text"]
    shared = export_workflow(endpoint, registry)
    assert {k: v for k, v in shared.items() if k != "extra"} == {
        k: v for k, v in workflow.items() if k != "extra"
    }
    again = import_request(shared, name="example", replace=True)
    assert again["workflow"] == workflow and again["fields"]["seed"]["random"] is True


def test_export_of_a_template_is_a_declaration_that_publishes_the_same_endpoint(
    registry: NodeRegistry, models: Path, endpoints: dict[str, Any], tmp_path: Path
) -> None:
    shipped = endpoints["flux-pro"]  # aspect_ratio derives width and height: the fullest declaration
    shared = export_workflow(shipped, registry)
    assert workflow_to_prompt(shared, registry) == shipped.graph
    endpoint = publish(import_request(shared), tmp_path, registry, {})
    assert endpoint.fields == shipped.fields and endpoint.pricing == shipped.pricing
    assert endpoint.graph == shipped.graph and endpoint.output == shipped.output
    probe = {"prompt": "a cat", "seed": 5, "aspect_ratio": "21:9"}
    assert endpoint.build(endpoint.parse(probe, strings=False), output_prefix="p") == shipped.build(
        shipped.parse(probe, strings=False), output_prefix="p"
    )
    assert endpoint.cost(endpoint.parse(probe, strings=False)) == shipped.cost(
        shipped.parse(probe, strings=False)
    )


def test_a_compiled_declaration_compiles_to_itself(registry: NodeRegistry) -> None:
    """Export writes the compiled fields; publishing them again must not change a thing."""
    fields = compiled_fields(
        {"steps": {"input": ["17", "steps"]}, "seed": {"input": ["25", "noise_seed"]}}, registry
    )
    assert compiled_fields(copy.deepcopy(fields), registry) == fields


def test_a_kept_editor_workflow_that_no_longer_gives_the_graph_stops_start_up(
    registry: NodeRegistry, models: Path, tmp_path: Path
) -> None:
    """Export hands the kept workflow out as the endpoint, so a hand edit of either half is caught."""
    workflow = json.loads((EXAMPLES / "flux_schnell_example.workflow.json").read_text())
    request = {"name": "example", "workflow": workflow, "fields": {"prompt": {"input": ["6", "text"]}}}
    publish(request, tmp_path, registry, {})
    template = json.loads((tmp_path / "example.json").read_text())
    assert template["published"] is True and template["workflow"] == workflow
    next(n for n in template["workflow"]["nodes"] if n["id"] == 17)["widgets_values"][1] = 9  # steps
    (tmp_path / "example.json").write_text(json.dumps(template))
    with pytest.raises(EndpointError, match=r"example\.json: workflow: node 17 \(BasicScheduler\) differs"):
        load_endpoints(tmp_path, registry)
