"""A Flux transformer stored under diffusers' names (OneReward's Fill model, as Comfy-Org repackages it):
recognised from its shapes, run as diffusers' own FluxTransformer2DModel runs those weights, and given
LoRAs under every name a LoRA may use, as a BFL-layout file of the same model is."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel

from engine.diffusion import flux
from engine.diffusion.detect import identify
from engine.diffusion.flux import FluxConfig
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.protocols import ModelInputs
from engine.diffusion.safetensors_file import load_tensors, read_header
from engine.diffusion.test_models import TINY_FLUX_FILL
from engine.nodes.loaders import LoraLoaderModelOnly, UNETLoader
from tests.diffusion.lora_files import lora_tensors, write_lora
from tests.diffusion.test_lora import loras, weights_of  # noqa: F401 (loras is a fixture)

pytestmark = pytest.mark.usefixtures("dirs", "manager")

ONE_REWARD = "flux.1-fill-dev-OneReward-transformer_fp8.safetensors"
REMOVAL_LORA = "removal_timestep_alpha-2-1740.safetensors"
H = TINY_FLUX_FILL.hidden_size


def test_the_file_is_recognised_as_the_fill_model_it_was_written_from(test_models_dir: Path) -> None:
    contents = identify(test_models_dir / "diffusion_models" / ONE_REWARD)
    assert contents.diffusion_model is not None
    config = contents.diffusion_model.config
    assert isinstance(config, FluxConfig)
    assert config == dataclasses.replace(TINY_FLUX_FILL, file_layout="diffusers")
    assert config.name == "Flux Fill"
    header = read_header(test_models_dir / "diffusion_models" / ONE_REWARD)
    assert {info.dtype for info in header.tensors.values()} == {"F8_E4M3"}


def test_it_predicts_what_diffusers_own_module_predicts_with_the_files_weights(
    manager: ModelManager, test_models_dir: Path
) -> None:
    (model,) = UNETLoader(manager).load_unet(ONE_REWARD, "default")
    reference = FluxTransformer2DModel(**TINY_FLUX_FILL.diffusers_config())
    weights = load_tensors(test_models_dir / "diffusion_models" / ONE_REWARD)
    reference.load_state_dict({name: t.float() for name, t in weights.items()}, strict=True)
    reference.eval()

    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 4, 6, generator=generator)
    inputs = ModelInputs(
        torch.randn(1, 5, 32, generator=generator),
        torch.randn(1, 64, generator=generator),
        concat_image=torch.randn(1, 16, 4, 6, generator=generator),
        concat_mask=(torch.rand(1, 1, 32, 48, generator=generator) > 0.5).float(),
    )
    sigma = torch.tensor([0.4])
    out = model.apply_model(x, sigma, inputs)
    with torch.no_grad():
        expected = flux.predict(reference, TINY_FLUX_FILL, x, sigma, inputs)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_its_peft_lora_adds_up_at_down_to_the_named_projections(
    manager: ModelManager, test_models_dir: Path
) -> None:
    (base,) = UNETLoader(manager).load_unet(ONE_REWARD, "default")
    (model,) = LoraLoaderModelOnly().load_lora_model_only(base, REMOVAL_LORA, 0.5)
    after = weights_of(model.module(), model.patches)
    w = {k: t.float() for k, t in load_tensors(test_models_dir / "diffusion_models" / ONE_REWARD).items()}
    lora = {k: t.float() for k, t in load_tensors(test_models_dir / "loras" / REMOVAL_LORA).items()}
    for layer in ("transformer_blocks.1.attn.add_k_proj", "single_transformer_blocks.0.attn.to_v"):
        delta = lora[f"transformer.{layer}.lora_B.weight"] @ lora[f"transformer.{layer}.lora_A.weight"]
        # fp8 weights take the change rounded to fp8, as ComfyUI stores a patched fp8 weight.
        expected = (w[f"{layer}.weight"] + 0.5 * delta).to(torch.float8_e4m3fn).float()
        torch.testing.assert_close(after[f"{layer}.weight"].float(), expected)
    assert len(model.patches) == len(lora) // 2


def test_a_kohya_lora_in_bfl_names_reaches_the_same_rows_as_on_a_bfl_file(
    manager: ModelManager,
    loras: Path,  # noqa: F811 (the fixture)
) -> None:
    """BFL's fused qkv names a diffusers-layout model's to_q, to_k and to_v as they do a BFL file's."""
    tensors = lora_tensors({"lora_unet_double_blocks_0_img_attn_qkv": (3 * H, H)}, rank=4, seed=3)
    write_lora(loras, "kohya.safetensors", tensors)
    on_bfl = UNETLoader(manager).load_unet("flux1-fill-dev.safetensors", "default")[0]
    on_diffusers = UNETLoader(manager).load_unet(ONE_REWARD, "default")[0]
    (bfl_view,) = LoraLoaderModelOnly().load_lora_model_only(on_bfl, "kohya.safetensors", 1.0)
    (diffusers_view,) = LoraLoaderModelOnly().load_lora_model_only(on_diffusers, "kohya.safetensors", 1.0)
    assert [(p.param, p.rows) for p in bfl_view.patches] == [
        (p.param, p.rows) for p in diffusers_view.patches
    ]
    assert {p.param for p in diffusers_view.patches} == {
        f"transformer_blocks.0.attn.to_{name}.weight" for name in "qkv"
    }
