"""Flux Redux: the SigLIP tower (CLIPVisionLoader, CLIPVisionEncode), the Redux projection
(StyleModelLoader) and StyleModelApply, checked against transformers, closed forms and a sampled graph."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import SiglipVisionModel

from engine import folders
from engine.diffusion.clip_vision import ClipVisionOutput, preprocess, siglip_config
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.safetensors_file import TensorInfo, WeightsFileError, load_tensors
from engine.diffusion.test_models import TINY_FLUX_SCHNELL, TINY_SIGLIP, _save, random_tensors, redux_layout
from engine.graph.execute import Executor
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.nodes import conditioning, image, latent, loaders, sampling, style_model, text_encoders
from engine.nodes.style_model import CLIPVisionEncode, CLIPVisionLoader, StyleModelApply, StyleModelLoader
from tests.diffusion.test_lora import CaptureLatent, flux_graph

pytestmark = pytest.mark.usefixtures("dirs", "manager")

SIGLIP = "sigclip_vision_patch14_384.safetensors"
REDUX = "flux1-redux-dev.safetensors"
PATCHES = (TINY_SIGLIP.image_size // TINY_SIGLIP.patch_size) ** 2


def random_image(height: int, width: int, seed: int, batch: int = 1) -> torch.Tensor:
    return torch.rand(batch, height, width, 3, generator=torch.Generator().manual_seed(seed))


def encode(manager: ModelManager, pixels: torch.Tensor, crop: str = "center") -> ClipVisionOutput:
    (clip_vision,) = CLIPVisionLoader(manager).load_clip(SIGLIP)
    return CLIPVisionEncode().encode(clip_vision, pixels, crop)[0]


def test_the_loaders_list_their_folders() -> None:
    assert CLIPVisionLoader.INPUT_TYPES()["required"]["clip_name"][0] == [SIGLIP]
    assert StyleModelLoader.INPUT_TYPES()["required"]["style_model_name"][0] == [REDUX]


def test_preprocessing_quantises_to_8_bits_and_normalises_with_mean_and_std_one_half() -> None:
    value = 0.1234  # 255 x 0.1234 = 31.467 -> 31
    pixels = preprocess(torch.full((1, 4, 4, 4), value), size=4, crop=True)
    assert pixels.shape == (1, 3, 4, 4), "the alpha channel is dropped, channels come first"
    assert torch.allclose(pixels, torch.full((1, 3, 4, 4), (31 / 255 - 0.5) / 0.5))


def test_center_crop_keeps_the_middle_rows_and_none_squashes_the_whole_image() -> None:
    rows = torch.arange(8, dtype=torch.float32).mul(0.1).view(1, 8, 1, 1).expand(1, 8, 4, 3)
    cropped = preprocess(rows, size=4, crop=True)
    expected = (torch.round(255 * torch.tensor([0.2, 0.3, 0.4, 0.5])) / 255 - 0.5) / 0.5
    assert torch.allclose(cropped[0, 0, :, 0], expected, atol=1e-6)
    squashed = preprocess(rows, size=4, crop=False)
    assert squashed.shape == (1, 3, 4, 4)
    assert squashed[0, 0, 0, 0] < expected[0] and squashed[0, 0, -1, 0] > expected[-1]


def test_the_encoding_is_transformers_siglip_on_the_same_weights(
    manager: ModelManager, dirs: folders.FolderSettings
) -> None:
    pixels = random_image(70, 90, seed=1)
    output = encode(manager, pixels)

    state = load_tensors(dirs.models_dir / "clip_vision" / SIGLIP, "vision_model.")
    reference = SiglipVisionModel(TINY_SIGLIP).eval()
    reference.load_state_dict({name: t.float() for name, t in state.items()}, strict=True)
    with torch.no_grad():
        expected = reference(
            pixel_values=preprocess(pixels, TINY_SIGLIP.image_size, crop=True), output_hidden_states=True
        )

    assert output.last_hidden_state.shape == (1, PATCHES, TINY_SIGLIP.hidden_size)
    torch.testing.assert_close(output.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output["image_embeds"], expected.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        output.penultimate_hidden_states, expected.hidden_states[-2], atol=1e-5, rtol=1e-5
    )
    assert output.all_hidden_states.shape[1] == TINY_SIGLIP.num_hidden_layers


def test_crop_none_encodes_another_view_of_the_image(manager: ModelManager) -> None:
    pixels = random_image(56, 112, seed=2)
    assert not torch.allclose(
        encode(manager, pixels, "center").last_hidden_state, encode(manager, pixels, "none").last_hidden_state
    )


def test_the_real_siglip_so400m_shapes_give_729_tokens_of_16_heads() -> None:
    hidden, layers = 1152, 27
    tensors = {
        "vision_model.embeddings.patch_embedding.weight": TensorInfo("BF16", (hidden, 3, 14, 14)),
        "vision_model.embeddings.position_embedding.weight": TensorInfo("BF16", (729, hidden)),
        **{
            f"vision_model.encoder.layers.{i}.mlp.fc1.weight": TensorInfo("BF16", (4304, hidden))
            for i in range(layers)
        },
    }
    config = siglip_config(tensors, "sigclip")
    assert (config.image_size, config.num_attention_heads, config.num_hidden_layers) == (384, 16, 27)
    assert (config.image_size // config.patch_size) ** 2 == 729


def test_the_redux_projection_is_the_dense_formula(
    manager: ModelManager, dirs: folders.FolderSettings
) -> None:
    (redux,) = StyleModelLoader(manager).load_style_model(REDUX)
    states = torch.randn(2, PATCHES, TINY_SIGLIP.hidden_size, generator=torch.Generator().manual_seed(3))
    vision = ClipVisionOutput(states, states, states, states[:, None])
    w = {name: t.float() for name, t in load_tensors(dirs.models_dir / "style_models" / REDUX).items()}
    up = states @ w["redux_up.weight"].T + w["redux_up.bias"]
    expected = (up * torch.sigmoid(up)) @ w["redux_down.weight"].T + w["redux_down.bias"]
    tokens = redux.get_cond(vision)
    assert tokens.shape == (2, PATCHES, TINY_FLUX_SCHNELL.context_in_dim)
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)


def apply(manager: ModelManager, strength: float, strength_type: str, images: int = 1) -> tuple[Any, Any]:
    text = torch.randn(1, 8, TINY_FLUX_SCHNELL.context_in_dim, generator=torch.Generator().manual_seed(4))
    given = [[text, {"pooled_output": torch.ones(1, 64)}]]
    vision = encode(manager, random_image(56, 56, seed=5, batch=images))
    (redux,) = StyleModelLoader(manager).load_style_model(REDUX)
    (out,) = StyleModelApply().apply_stylemodel(given, redux, vision, strength, strength_type)
    return given, out


def test_style_model_apply_appends_a_token_per_patch_of_every_image_scaled_by_strength(
    manager: ModelManager,
) -> None:
    given, full = apply(manager, 1.0, "multiply")
    ((cond, options),) = full
    assert cond.shape == (1, 8 + PATCHES, TINY_FLUX_SCHNELL.context_in_dim)
    assert torch.equal(cond[:, :8], given[0][0]) and options["pooled_output"] is given[0][1]["pooled_output"]
    assert options is not given[0][1]

    _, half = apply(manager, 0.5, "multiply")
    torch.testing.assert_close(half[0][0][:, 8:], 0.5 * cond[:, 8:])
    _, two = apply(manager, 1.0, "multiply", images=2)
    assert two[0][0].shape[1] == 8 + 2 * PATCHES, "a batch of images adds its tokens one image after another"
    _, bias_one = apply(manager, 1.0, "attn_bias")
    assert torch.equal(bias_one[0][0], cond), "a bias of log(1) = 0 leaves plain appended tokens"


def test_attn_bias_with_another_strength_is_refused_naming_multiply(manager: ModelManager) -> None:
    with pytest.raises(ValueError, match=r"attention mask.*'multiply'"):
        apply(manager, 0.5, "attn_bias")


def test_pickles_and_other_kinds_of_file_are_refused_by_name(
    manager: ModelManager, dirs: folders.FolderSettings
) -> None:
    pickle = dirs.models_dir / "clip_vision" / "old.pth"
    adapter = dirs.models_dir / "style_models" / "t2i_style.safetensors"
    wrong = dirs.models_dir / "clip_vision" / "redux_here.safetensors"
    pickle.write_bytes(b"\x80\x04whatever")
    _save(adapter, random_tensors({"style_embedding": (1, 8, 32)}, seed=1))
    _save(wrong, random_tensors(redux_layout(144, 96, 32), seed=1))
    try:
        with pytest.raises(WeightsFileError, match="run arbitrary code"):
            CLIPVisionLoader(manager).load_clip("old.pth")
        with pytest.raises(WeightsFileError, match=r"redux_here\.safetensors: not a SigLIP"):
            CLIPVisionLoader(manager).load_clip("redux_here.safetensors")
        with pytest.raises(WeightsFileError, match=r"t2i_style\.safetensors: a T2I style adapter"):
            StyleModelLoader(manager).load_style_model("t2i_style.safetensors")
    finally:
        for path in (pickle, adapter, wrong):
            path.unlink()


@pytest.fixture
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    for module in (loaders, latent, conditioning, text_encoders, sampling, image, style_model):
        registry.register(module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS)
    registry.register({"CaptureLatent": CaptureLatent}, python_module="tests")
    return registry


def redux_graph(strength: float) -> dict[str, Any]:
    """The Flux schnell graph with ComfyUI's Redux example chain between the prompt and the guider."""
    graph = flux_graph(None, seed=1)
    graph |= {
        "50": {"class_type": "LoadImage", "inputs": {"image": "style.png"}},
        "51": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": SIGLIP}},
        "52": {
            "class_type": "CLIPVisionEncode",
            "inputs": {"clip_vision": ["51", 0], "image": ["50", 0], "crop": "center"},
        },
        "53": {"class_type": "StyleModelLoader", "inputs": {"style_model_name": REDUX}},
        "54": {
            "class_type": "StyleModelApply",
            "inputs": {
                "conditioning": ["6", 0],
                "style_model": ["53", 0],
                "clip_vision_output": ["52", 0],
                "strength": strength,
                "strength_type": "multiply",
            },
        },
    }
    graph["22"]["inputs"]["conditioning"] = ["54", 0]
    return graph


def run(executor: Executor, graph: dict[str, Any]) -> torch.Tensor:
    validation = validate_prompt(executor.registry, graph)
    assert validation.validated is not None, validation
    result = executor.run(validation.validated, prompt_id="redux")
    assert result.status == "success", result.failure
    latent: torch.Tensor = result.outputs["40"]["samples"][0]
    return latent


def test_a_redux_graph_samples_through_the_executor(
    registry: NodeRegistry, manager: ModelManager, dirs: folders.FolderSettings
) -> None:
    noise = np.random.default_rng(6).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(noise).save(Path(dirs.input_dir) / "style.png")
    executor = Executor(registry, resources={"models": manager})

    styled = run(executor, redux_graph(1.0))
    plain = run(executor, flux_graph(None, seed=1))
    stronger = run(executor, redux_graph(2.0))

    assert styled.shape == plain.shape == (1, 16, 8, 8)
    assert not torch.allclose(styled, plain), "the image's tokens change what the model samples"
    assert not torch.allclose(styled, stronger), "the strength scales the image's tokens"
