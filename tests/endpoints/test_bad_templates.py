"""A template that cannot be served stops start-up with a message naming the file and the field at fault;
a missing model file only marks its endpoint unavailable."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from engine import folders
from engine.diffusion.text_encoders.test_files import write_test_tokenizers
from engine.endpoints import EndpointError, load_endpoints
from engine.graph.registry import NodeRegistry
from tests.diffusion.bad_weights import MALFORMED, write_malformed
from tests.endpoints.conftest import GRAPHS
from tests.endpoints.samples import SOLID, Template, write


def shipped(name: str) -> Template:
    return json.loads((GRAPHS / f"{name}.json").read_text())


def test_the_minimal_template_loads(tmp_path: Path, registry: NodeRegistry) -> None:
    write(tmp_path, "solid", SOLID)
    endpoint = load_endpoints(tmp_path, registry)["solid"]
    assert endpoint.unavailable is None and list(endpoint.fields) == list(SOLID["fields"])


def _field(name: str, **changes: Any) -> Callable[[Template], None]:
    def change(template: Template) -> None:
        template["fields"][name].update(changes)
        for key, value in changes.items():
            if value is None:
                del template["fields"][name][key]

    return change


def _set(path: str, value: Any) -> Callable[[Template], None]:
    def change(template: Template) -> None:
        *parents, last = path.split(".")
        target = template
        for key in parents:
            target = target[key]
        target[last] = value

    return change


BAD_SOLID = {
    "binding to a missing input": (_field("width", sets=[["1", "widht"]]), "field 'width'", "widht"),
    "binding to a missing node": (_field("width", sets=[["9", "width"]]), "field 'width'", "no node 9"),
    "a range beyond the node's": (
        _field("width", maximum=20000),
        "field 'width'",
        "maximum 20000 is above 1.width (EmptyImage.width)'s maximum 16384",
    ),
    "no minimum where the node has one": (_field("color", minimum=None), "field 'color'", "has no minimum"),
    "a string bound to an INT": (
        _field("width", type="string", minimum=None, maximum=None, default="64"),
        "field 'width'",
        "takes INT",
    ),
    "a number bound to an INT": (_field("height", type="number"), "field 'height'", "takes INT"),
    "a default outside the field's range": (_field("width", default=2048), "field 'width'", "default 2048"),
    "a default of the wrong type": (_field("width", default="64"), "field 'width'", "must be an integer"),
    "a misspelt key": (_field("width", maximun=512), "field 'width'", "maximun"),
    "two fields on one input": (_field("height", sets=[["1", "width"]]), "field 'height'", "already set"),
    "a field that sets nothing": (_field("color", sets=[]), "field 'color'", "sets no node input"),
    "binding the output node": (_field("color", sets=[["2", "filename_prefix"]]), "field 'color'", "output"),
    "a price field not in pricing": (_field("width", affects_price=True), "field 'width'", "no pricing term"),
    "pricing a field not marked": (
        _set("pricing.multiply", [{"field": "color"}]),
        "field 'color'",
        "affects_price",
    ),
    "a negative price": (_set("pricing.base", -1), "pricing: base", "negative"),
    "an unsupported output format": (_field("output_format", enum=["png", "gif"]), "output_format", "gif"),
    "a fixed output format the node lacks": (
        _set("output", {"node": "2", "format": "tiff"}),
        "output",
        "tiff",
    ),
    "an output node not in the graph": (_set("output.node", "7"), "output", "node 7"),
    "an unknown node type": (_set("prompt.1.class_type", "NoSuchNode"), "node 1", "NoSuchNode"),
    "an unknown api": (_set("api", "replicate"), "api", "segmind, fal"),
}


@pytest.mark.parametrize("case", sorted(BAD_SOLID))
def test_a_bad_template_is_refused_naming_the_file_and_the_field(
    tmp_path: Path, registry: NodeRegistry, case: str
) -> None:
    change, where, detail = BAD_SOLID[case]
    template = copy.deepcopy(SOLID)
    change(template)
    path = write(tmp_path, "solid", template)
    with pytest.raises(EndpointError) as raised:
        load_endpoints(tmp_path, registry)
    message = str(raised.value)
    assert message.startswith(str(path)), message
    assert where in message and detail in message, message


def test_an_enum_value_not_among_the_combos_choices_is_refused(
    tmp_path: Path, registry: NodeRegistry, models: Path
) -> None:
    template = shipped("aura-flow")
    template["fields"]["sampler"]["enum"].append("warp_drive")
    path = write(tmp_path, "aura-flow", template)
    with pytest.raises(EndpointError, match=r"field 'sampler'.*warp_drive.*KSampler\.sampler_name") as raised:
        load_endpoints(tmp_path, registry)
    assert str(raised.value).startswith(str(path))


def test_a_graph_constant_that_fails_validation_is_refused(
    tmp_path: Path, registry: NodeRegistry, models: Path
) -> None:
    template = shipped("aura-flow")
    template["prompt"]["3"]["inputs"]["denoise"] = 2.0
    path = write(tmp_path, "aura-flow", template)
    with pytest.raises(
        EndpointError, match=r"fails validation at node 3 \(KSampler\).*bigger than max"
    ) as raised:
        load_endpoints(tmp_path, registry)
    assert str(raised.value).startswith(str(path))


def test_binding_a_socket_is_refused(tmp_path: Path, registry: NodeRegistry, models: Path) -> None:
    template = shipped("aura-flow")
    template["fields"]["cfg"]["sets"] = [["3", "model"]]
    write(tmp_path, "aura-flow", template)
    with pytest.raises(EndpointError, match=r"field 'cfg'.*MODEL socket"):
        load_endpoints(tmp_path, registry)


def test_a_derived_table_must_cover_every_enum_value(
    tmp_path: Path, registry: NodeRegistry, models: Path
) -> None:
    template = shipped("flux-pro")
    del template["fields"]["aspect_ratio"]["derive"]["table"]["9:21"]
    write(tmp_path, "flux-pro", template)
    with pytest.raises(EndpointError, match=r"field 'aspect_ratio'.*9:21"):
        load_endpoints(tmp_path, registry)


def test_a_derived_value_beyond_the_nodes_range_is_refused(
    tmp_path: Path, registry: NodeRegistry, models: Path
) -> None:
    template = shipped("flux-pro")
    template["fields"]["aspect_ratio"]["derive"]["table"]["21:9"]["width"] = 99999
    write(tmp_path, "flux-pro", template)
    with pytest.raises(EndpointError, match=r"field 'aspect_ratio'.*'21:9'.*99999"):
        load_endpoints(tmp_path, registry)


def test_a_fal_app_must_live_at_owner_slash_app(tmp_path: Path, registry: NodeRegistry, models: Path) -> None:
    write(tmp_path, "aura-flow", shipped("fal-ai/aura-flow"))
    with pytest.raises(EndpointError, match="owner/app"):
        load_endpoints(tmp_path, registry)


@pytest.mark.parametrize(("name", "template"), [("requests", "solid-color"), ("v2/flow", "fal-ai/aura-flow")])
def test_a_path_other_routes_use_is_refused(
    tmp_path: Path, registry: NodeRegistry, models: Path, name: str, template: str
) -> None:
    write(tmp_path, name, shipped(template))
    with pytest.raises(EndpointError, match="other routes use it"):
        load_endpoints(tmp_path, registry)


def test_hidden_files_are_not_endpoints(tmp_path: Path, registry: NodeRegistry) -> None:
    write(tmp_path, "solid", SOLID)
    write(tmp_path, ".draft", SOLID)
    write(tmp_path, ".old/solid", SOLID)
    assert list(load_endpoints(tmp_path, registry)) == ["solid"]


def test_a_file_that_is_not_json_is_refused(tmp_path: Path, registry: NodeRegistry) -> None:
    (tmp_path / "broken.json").write_text('{"api": "segmind",')
    with pytest.raises(EndpointError, match=r"broken\.json: not a JSON file"):
        load_endpoints(tmp_path, registry)


def test_a_missing_model_file_marks_the_endpoint_unavailable_instead(
    tmp_path: Path, registry: NodeRegistry, models: Path
) -> None:
    template = shipped("flux-schnell")
    template["prompt"]["12"]["inputs"]["unet_name"] = "flux1-schnell-fp8.safetensors"
    write(tmp_path, "flux-schnell", template)
    endpoint = load_endpoints(tmp_path, registry)["flux-schnell"]
    assert (
        endpoint.unavailable == "missing model file(s): flux1-schnell-fp8.safetensors (UNETLoader.unet_name)"
    )


def test_a_model_file_added_later_is_found_at_the_next_load(
    registry: NodeRegistry, workdir: folders.FolderSettings, test_models_dir: Path
) -> None:
    write_test_tokenizers(workdir.models_dir / "text_encoders")
    assert load_endpoints(GRAPHS, registry)["aura-flow"].unavailable is not None
    checkpoints = workdir.models_dir / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "aura_flow_0.3.safetensors").symlink_to(
        test_models_dir / "checkpoints" / "aura_flow_0.3.safetensors"
    )
    assert load_endpoints(GRAPHS, registry)["aura-flow"].unavailable is None


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_model_file_marks_only_the_endpoints_using_it_unavailable(
    registry: NodeRegistry, models: Path, kind: str
) -> None:
    (models / "vae" / "ae.safetensors").unlink()
    write_malformed(models / "vae" / "ae.safetensors", kind)
    endpoints = load_endpoints(GRAPHS, registry)
    for endpoint_id in ("flux-schnell", "flux-dev", "flux-pro"):
        reason = endpoints[endpoint_id].unavailable or ""
        assert reason.startswith("unusable model file(s): ae.safetensors: "), reason
        assert MALFORMED[kind][1] in reason
    assert endpoints["aura-flow"].unavailable is None and endpoints["solid-color"].unavailable is None


def test_a_pickle_or_an_unknown_model_marks_its_endpoint_unavailable(
    registry: NodeRegistry, models: Path, tmp_path: Path
) -> None:
    template = shipped("flux-schnell")
    template["prompt"]["12"]["inputs"]["unet_name"] = "flux1-schnell.ckpt"
    template["prompt"]["10"]["inputs"]["vae_name"] = "mystery.safetensors"
    write(tmp_path / "graphs", "flux-schnell", template)
    (models / "diffusion_models" / "flux1-schnell.ckpt").write_bytes(b"\x80\x04 a pickle")
    save_file(
        {"transformer.h.0.attn.c_attn.weight": torch.zeros(2, 2)}, models / "vae" / "mystery.safetensors"
    )
    reason = load_endpoints(tmp_path / "graphs", registry)["flux-schnell"].unavailable or ""
    assert "flux1-schnell.ckpt: '.ckpt' files are Python pickles" in reason
    assert "mystery.safetensors: not a model this engine runs" in reason


def test_without_the_tokenizer_a_prompt_is_counted_with_the_endpoint_is_unavailable_saying_where_to_put_it(
    registry: NodeRegistry, models: Path
) -> None:
    shutil.rmtree(models / "text_encoders" / "tokenizers" / "t5xxl")

    endpoints = load_endpoints(GRAPHS, registry)

    assert endpoints["aura-flow"].unavailable is None
    for endpoint_id in ("flux-schnell", "flux-dev", "flux-pro"):
        reason = endpoints[endpoint_id].unavailable or ""
        assert reason.startswith("missing tokenizer(s): no T5-XXL tokenizer found. Put spiece.model")
        assert str(models / "text_encoders" / "tokenizers" / "t5xxl") in reason
