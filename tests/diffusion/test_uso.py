"""USO on Flux.1 dev: ModelPatchLoader's projector, USOStyleReference's style tokens inside the model,
and USO's DiT LoRA, checked on the tiny test files against closed forms written here from USO's published
structure (ComfyUI's SigLIPMultiFeatProjModel and convert_uso_lora, read for the facts)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from engine import folders
from engine.diffusion import flux
from engine.diffusion.clip_vision import ClipVisionOutput
from engine.diffusion.diffusion_model import LoadedDiffusionModel
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.protocols import ModelInputs
from engine.diffusion.safetensors_file import WeightsFileError
from engine.diffusion.test_models import (
    TINY_FLUX_DEV,
    TINY_SIGLIP,
    TINY_SIGLIP_TOKENS,
    TINY_USO_STYLE_TOKENS,
    _save,
    random_tensors,
    uso_projector_layout,
)
from engine.nodes.loaders import LoraLoaderModelOnly, UNETLoader
from engine.nodes.model_patch import ModelPatchLoader, USOStyleReference
from tests.diffusion.test_lora import file_weights, weights_of

pytestmark = pytest.mark.usefixtures("dirs", "manager")

PROJECTOR = "uso-flux1-projector-v1.safetensors"
LORA = "uso-flux1-dit-lora-v1.safetensors"
WIDTH = TINY_SIGLIP.hidden_size
H, M = TINY_FLUX_DEV.hidden_size, TINY_FLUX_DEV.mlp_hidden


def vision_output(seed: int, layers: int = TINY_SIGLIP.num_hidden_layers) -> ClipVisionOutput:
    """A CLIP_VISION_OUTPUT whose every layer holds different states."""
    states = torch.randn(1, layers, TINY_SIGLIP_TOKENS, WIDTH, generator=torch.Generator().manual_seed(seed))
    return ClipVisionOutput(states[:, -1], states[:, -1], states[:, -2], states)


def branch(weights: dict[str, torch.Tensor], name: str, states: torch.Tensor) -> torch.Tensor:
    """One branch of USO's projector, in closed form: SiLU(linear over the token axis), LayerNorm over the
    width (eps 1e-5), linear to the Flux width."""
    p = f"feature_embedder.{name}_"
    mixed = F.silu(
        torch.einsum("btd,st->bsd", states, weights[p + "embedding_linear.0.weight"])
        + weights[p + "embedding_linear.0.bias"][:, None]
    )
    mean = mixed.mean(-1, keepdim=True)
    var = mixed.var(-1, unbiased=False, keepdim=True)
    normed = (mixed - mean) / torch.sqrt(var + 1e-5) * weights[p + "layer_norm.weight"] + weights[
        p + "layer_norm.bias"
    ]
    return normed @ weights[p + "projection.weight"].T + weights[p + "projection.bias"]


def dev(manager: ModelManager) -> LoadedDiffusionModel:
    return UNETLoader(manager).load_unet("flux1-dev.safetensors", "default")[0]


def test_the_style_tokens_are_the_three_branches_on_layers_penultimate_minus_11_and_minus_20(
    manager: ModelManager, test_models_dir: Path
) -> None:
    (patch,) = ModelPatchLoader(manager).load_model_patch(PROJECTOR)
    vision = vision_output(seed=1)
    tokens = patch.style_tokens(vision)

    weights = file_weights(test_models_dir, f"model_patches/{PROJECTOR}")
    layers = vision.all_hidden_states
    expected = torch.cat(
        [
            branch(weights, "high", layers[:, -2]),
            branch(weights, "mid", layers[:, -11]),
            branch(weights, "low", layers[:, -20]),
        ],
        dim=1,
    )
    assert tokens.shape == (1, 3 * TINY_USO_STYLE_TOKENS, H)
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)


def test_the_model_reads_the_style_tokens_before_the_projected_text_tokens(manager: ModelManager) -> None:
    base = dev(manager)
    (patch,) = ModelPatchLoader(manager).load_model_patch(PROJECTOR)
    (styled,) = USOStyleReference().apply_patch(base, patch, vision_output(seed=2))
    style = patch.style_tokens(vision_output(seed=2))
    x = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(3))
    inputs = ModelInputs(torch.randn(1, 5, 32), torch.randn(1, 64))
    module = base.module()
    seen: dict[str, Any] = {}

    def capture(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.update(kwargs)

    hook = module.transformer_blocks[0].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        out = styled.apply_model(x, torch.tensor([0.7]), inputs)
    finally:
        hook.remove()
    plain = base.apply_model(x, torch.tensor([0.7]), inputs)

    text = module.context_embedder(inputs.context)
    expected = torch.cat([style, text], dim=1)
    torch.testing.assert_close(seen["encoder_hidden_states"], expected, atol=1e-5, rtol=1e-5)
    cos, _ = seen["image_rotary_emb"]
    assert cos.shape[0] == 3 * TINY_USO_STYLE_TOKENS + 5 + 2 * 2, "a position for every token"
    assert not torch.allclose(out, plain)
    assert torch.equal(base.apply_model(x, torch.tensor([0.7]), inputs), plain), "the input stays plain"


def test_two_style_references_put_the_later_ones_tokens_first(manager: ModelManager) -> None:
    (patch,) = ModelPatchLoader(manager).load_model_patch(PROJECTOR)
    first, second = vision_output(seed=4), vision_output(seed=5)
    (once,) = USOStyleReference().apply_patch(dev(manager), patch, first)
    (twice,) = USOStyleReference().apply_patch(once, patch, second)
    assert [t.shape[1] for t in twice.text_prefixes] == [3 * TINY_USO_STYLE_TOKENS] * 2
    torch.testing.assert_close(twice.text_prefixes[0], patch.style_tokens(second))
    torch.testing.assert_close(twice.text_prefixes[1], patch.style_tokens(first))


def test_a_siglip_output_without_layer_minus_20_is_refused_naming_it(manager: ModelManager) -> None:
    (patch,) = ModelPatchLoader(manager).load_model_patch(PROJECTOR)
    with pytest.raises(ValueError, match="layer -20"):
        USOStyleReference().apply_patch(dev(manager), patch, vision_output(seed=6, layers=12))


@pytest.fixture
def own_patches(dirs: folders.FolderSettings, tmp_path: Path) -> Iterator[Path]:
    """A model_patches folder of the test's own (the shared test models stay as written)."""
    directory = tmp_path / "model_patches"
    directory.mkdir()
    folders.use(dataclasses.replace(dirs, model_paths={**dirs.model_paths, "model_patches": (directory,)}))
    yield directory


def test_other_model_patches_are_refused_by_name(manager: ModelManager, own_patches: Path) -> None:
    path = own_patches / "qwen_blockwise.safetensors"
    _save(path, {"controlnet_blocks.0.y_rms.weight": torch.ones(4), "img_in.weight": torch.ones(4, 64)})
    with pytest.raises(WeightsFileError, match="Qwen-Image block-wise ControlNet"):
        ModelPatchLoader(manager).load_model_patch(path.name)


def test_a_projector_for_another_width_is_refused_before_sampling(
    manager: ModelManager, own_patches: Path
) -> None:
    path = own_patches / "uso-wide.safetensors"
    _save(path, random_tensors(uso_projector_layout(TINY_SIGLIP_TOKENS, 4, WIDTH, 2 * H), seed=1))
    (patch,) = ModelPatchLoader(manager).load_model_patch(path.name)
    with pytest.raises(ValueError, match=f"{2 * H}-wide tokens"):
        USOStyleReference().apply_patch(dev(manager), patch, vision_output(seed=7))


def test_the_uso_lora_lands_where_comfyui_puts_it_single_blocks_proj_on_linear2(
    manager: ModelManager, test_models_dir: Path
) -> None:
    """ComfyUI maps USO's keys: qkv_lora1/2 -> img/txt_attn.qkv, proj_lora1/2 -> img/txt_attn.proj,
    a single block's qkv_lora -> the qkv rows of linear1, proj_lora -> linear2 (all of its 64 + 256
    inputs); no alpha, so each change is up @ down."""
    (model,) = LoraLoaderModelOnly().load_lora_model_only(dev(manager), LORA, 1.0)
    after = weights_of(model.module(), model.patches)
    w = file_weights(test_models_dir, "diffusion_models/flux1-dev.safetensors")
    lora = file_weights(test_models_dir, f"loras/{LORA}")

    def delta(module: str) -> torch.Tensor:
        return lora[f"{module}.up.weight"] @ lora[f"{module}.down.weight"]

    linear2 = w["single_blocks.1.linear2.weight"] + delta("single_blocks.1.processor.proj_lora")
    assert after["single_transformer_blocks.1.proj_out.weight"].shape == (H, H + M)
    torch.testing.assert_close(after["single_transformer_blocks.1.proj_out.weight"], linear2)
    qkv = w["single_blocks.0.linear1.weight"][: 3 * H] + delta("single_blocks.0.processor.qkv_lora")
    torch.testing.assert_close(after["single_transformer_blocks.0.attn.to_k.weight"], qkv[H : 2 * H])
    txt_proj = w["double_blocks.1.txt_attn.proj.weight"] + delta("double_blocks.1.processor.proj_lora2")
    torch.testing.assert_close(after["transformer_blocks.1.attn.to_add_out.weight"], txt_proj)
    layers = TINY_FLUX_DEV.depth * (3 + 3 + 1 + 1) + TINY_FLUX_DEV.depth_single_blocks * (3 + 1)
    assert len(model.patches) == layers, "every key of the file is applied"


def test_flux_predict_puts_positions_for_the_prefix() -> None:
    """The prefix widens the text stream, so the text positions grow with it (all at the origin)."""
    config = TINY_FLUX_DEV
    module = config.create_module().eval()
    seen: dict[str, Any] = {}

    def capture(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        seen.update(kwargs)

    hook = module.register_forward_pre_hook(capture, with_kwargs=True)
    prefix = torch.randn(1, 3, config.hidden_size)
    inputs = ModelInputs(torch.randn(1, 5, 32), torch.randn(1, 64), text_prefix=prefix)
    with torch.no_grad():
        flux.predict(module, config, torch.randn(1, 16, 4, 4), torch.tensor([0.5]), inputs)
    hook.remove()
    assert torch.equal(seen["txt_ids"], torch.zeros(8, 3))
