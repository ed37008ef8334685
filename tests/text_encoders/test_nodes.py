"""The loader and conditioning nodes: ComfyUI's declarations, and the conditioning Flux and AuraFlow get."""

from __future__ import annotations

import re

import pytest
import torch

from engine.diffusion.text_encoders import UnsupportedTextEncodersError
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.nodes import conditioning, preview_any, text_encoders
from engine.nodes.conditioning import CLIPTextEncode, ConditioningZeroOut, FluxGuidance
from engine.nodes.text_encoders import CLIPLoader, DualCLIPLoader

FLUX_DEV_TEXT_NODES = {
    "11": {
        "class_type": "DualCLIPLoader",
        "inputs": {
            "clip_name1": "t5xxl_fp16.safetensors",
            "clip_name2": "clip_l.safetensors",
            "type": "flux",
        },
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "cute anime girl", "clip": ["11", 0]}},
    "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": ["6", 0]}},
}
"""The text half of ComfyUI's Flux dev example graph (its API prompt, the prompt text shortened)."""


@pytest.fixture
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    for module in (text_encoders, conditioning, preview_any):
        registry.register(module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS)
    return registry


def test_loaders_list_the_text_encoder_files(configured_folders):
    """The declarations themselves are held to ComfyUI's in tests/graph/test_object_info_parity.py."""
    dual = DualCLIPLoader.INPUT_TYPES()
    assert dual["required"]["clip_name1"] == (["clip_l.safetensors", "t5xxl_fp16.safetensors"],)


def test_the_flux_dev_examples_text_nodes_validate(configured_folders, registry):
    prompt = dict(FLUX_DEV_TEXT_NODES)
    prompt["show"] = {"class_type": "PreviewAny", "inputs": {"source": ["26", 0]}}

    result = validate_prompt(registry, prompt)

    assert result.ok, result.error_body()
    assert result.validated.prompt["26"]["inputs"]["guidance"] == 3.5


def test_dual_clip_loader_for_flux_gives_t5_states_and_clip_l_pooled(configured_folders, manager):
    (clip,) = DualCLIPLoader(manager).load_clip("t5xxl_fp16.safetensors", "clip_l.safetensors", "flux")
    (swapped,) = DualCLIPLoader(manager).load_clip("clip_l.safetensors", "t5xxl_fp16.safetensors", "flux")

    ((cond, options),) = CLIPTextEncode().encode(clip, "a red cat")[0]
    ((swapped_cond, swapped_options),) = CLIPTextEncode().encode(swapped, "a red cat")[0]

    assert cond.shape == (1, 256, 32) and cond.dtype == torch.float32
    assert options["pooled_output"].shape == (1, 64)
    torch.testing.assert_close(swapped_cond, cond)
    torch.testing.assert_close(swapped_options["pooled_output"], options["pooled_output"])


def test_auraflow_conditioning_has_pile_t5_states_and_no_pooled_vector(aura_clip):
    ((cond, options),) = CLIPTextEncode().encode(aura_clip, "a red cat")[0]

    assert cond.shape == (1, 256, 32)
    assert options == {"pooled_output": None}


def test_clip_loader_loads_clip_l_alone(configured_folders, manager):
    (clip,) = CLIPLoader(manager).load_clip("clip_l.safetensors", "stable_diffusion")

    ((cond, options),) = CLIPTextEncode().encode(clip, "a red cat")[0]

    assert cond.shape == (1, 77, 64) and options["pooled_output"].shape == (1, 64)


@pytest.mark.parametrize(
    ("load", "message"),
    [
        (
            lambda models: DualCLIPLoader(models).load_clip(
                "clip_l.safetensors", "t5xxl_fp16.safetensors", "sdxl"
            ),
            "type 'sdxl'",
        ),
        (
            lambda models: CLIPLoader(models).load_clip("t5xxl_fp16.safetensors", "sd3"),
            "T5-XXL with type 'sd3'",
        ),
        (
            lambda models: DualCLIPLoader(models).load_clip(
                "clip_l.safetensors", "clip_l.safetensors", "flux"
            ),
            "CLIP-L + CLIP-L",
        ),
    ],
)
def test_combinations_no_served_model_uses_are_refused_with_what_is_served(
    configured_folders, manager, load, message
):
    with pytest.raises(UnsupportedTextEncodersError, match=re.escape(message)) as error:
        load(manager)

    assert "Flux (CLIP-L + T5-XXL, type flux)" in str(error.value)


def test_running_text_encoders_on_another_device_is_refused(configured_folders, manager):
    with pytest.raises(ValueError, match="device 'cpu' is not supported"):
        CLIPLoader(manager).load_clip("clip_l.safetensors", "stable_diffusion", device="cpu")


def test_clip_text_encode_without_a_clip_says_where_to_get_one():
    with pytest.raises(ValueError, match="CLIPLoader or DualCLIPLoader"):
        CLIPTextEncode().encode(None, "a red cat")


def test_flux_guidance_sets_guidance_on_a_copy():
    given = [[torch.ones(1, 4, 2), {"pooled_output": torch.ones(1, 3)}]]

    (guided,) = FluxGuidance().append(given, 2.5)

    assert guided[0][1]["guidance"] == 2.5 and guided[0][1]["pooled_output"] is given[0][1]["pooled_output"]
    assert "guidance" not in given[0][1]


def test_zero_out_keeps_shapes_and_zeroes_states_and_pooled_vector(flux_clip):
    given = CLIPTextEncode().encode(flux_clip, "a red cat")[0]

    ((cond, options),) = ConditioningZeroOut().zero_out(given)[0]

    assert cond.shape == given[0][0].shape and torch.count_nonzero(cond) == 0
    assert options["pooled_output"].shape == (1, 64) and torch.count_nonzero(options["pooled_output"]) == 0
    assert torch.count_nonzero(given[0][0]) > 0


def test_zero_out_leaves_a_missing_pooled_vector_missing(aura_clip):
    given = CLIPTextEncode().encode(aura_clip, "a red cat")[0]

    ((cond, options),) = ConditioningZeroOut().zero_out(given)[0]

    assert torch.count_nonzero(cond) == 0 and options == {"pooled_output": None}
