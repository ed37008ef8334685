"""The engine's loading equals diffusers' own loading path, on the test models' random weights.

Each reference is what a diffusers user would run: diffusers' converter from the original layout,
the diffusers model built from the same config, and the model called as diffusers' pipeline calls it
(Flux latents packed by FluxPipeline's own helpers, sigma as the timestep). The engine's modules must hold
exactly the reference's tensors, and its forward through its MODEL and VAE objects must match the
reference's to 1e-5 in fp32.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from diffusers import AuraFlowTransformer2DModel, AutoencoderKL, FluxPipeline, FluxTransformer2DModel
from diffusers.loaders.single_file_utils import (
    convert_auraflow_transformer_checkpoint_to_diffusers,
    convert_flux_transformer_checkpoint_to_diffusers,
    convert_ldm_vae_checkpoint,
)
from safetensors.torch import save_file

from engine.diffusion import auraflow, autoencoder, flux
from engine.diffusion.autoencoder import AutoencoderConfig
from engine.diffusion.diffusion_model import LoadedDiffusionModel
from engine.diffusion.flux import FluxConfig
from engine.diffusion.loading import load_checkpoint, load_diffusion_model, load_vae
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.protocols import ModelInputs
from engine.diffusion.safetensors_file import WeightsFileError, load_tensors
from engine.diffusion.test_models import (
    TINY_AURAFLOW,
    TINY_FLUX_AE,
    TINY_FLUX_CANNY,
    TINY_FLUX_DEV,
    TINY_FLUX_FILL,
    TINY_FLUX_SCHNELL,
    TINY_SDXL_VAE,
)
from engine.diffusion.vae import VAE

TOLERANCE = 1e-5
FULL_FLUX_WIDTH = 3072


def diffusers_flux_converter(hidden_size: int) -> types.FunctionType:
    """diffusers' Flux converter with its one size-specific literal (the 3072 width) set to `hidden_size`.

    The function hard-codes the published width to split single blocks' fused projections; everything
    else it does is size-independent. Rebinding that constant runs diffusers' own code on a tiny model.
    """
    code = convert_flux_transformer_checkpoint_to_diffusers.__code__
    assert code.co_consts.count(FULL_FLUX_WIDTH) == 1
    constants = tuple(hidden_size if c == FULL_FLUX_WIDTH else c for c in code.co_consts)
    return types.FunctionType(
        code.replace(co_consts=constants), convert_flux_transformer_checkpoint_to_diffusers.__globals__
    )


def fp32(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: t.float() for name, t in tensors.items()}


def reference_module(
    cls: type, config: dict[str, object], state_dict: dict[str, torch.Tensor]
) -> torch.nn.Module:
    module = cls(**config)
    module.load_state_dict(state_dict, strict=True)
    return module.eval()


def flux_reference(path: Path, prefix: str, config: FluxConfig) -> FluxTransformer2DModel:
    converter = diffusers_flux_converter(config.hidden_size)
    state_dict = converter(fp32(load_tensors(path, prefix)))
    return reference_module(FluxTransformer2DModel, config.diffusers_config(), state_dict)


def run_flux_reference(
    module: FluxTransformer2DModel,
    latent: torch.Tensor,
    sigma: torch.Tensor,
    context: torch.Tensor,
    pooled: torch.Tensor | None,
    guidance: torch.Tensor | None,
) -> torch.Tensor:
    """One transformer call exactly as FluxPipeline makes it, unpacked back to a latent."""
    b, c, h, w = latent.shape
    with torch.no_grad():
        packed = module(
            hidden_states=FluxPipeline._pack_latents(latent, b, c, h, w),
            timestep=sigma,
            guidance=guidance,
            pooled_projections=pooled,
            encoder_hidden_states=context,
            txt_ids=torch.zeros(context.shape[1], 3),
            img_ids=FluxPipeline._prepare_latent_image_ids(b, h // 2, w // 2, latent.device, latent.dtype),
            return_dict=False,
        )[0]
    return FluxPipeline._unpack_latents(packed, h * 8, w * 8, 8)


def inputs(batch: int, tokens: int = 12, width: int = 32, pooled: int | None = 64) -> ModelInputs:
    generator = torch.Generator().manual_seed(3)
    return ModelInputs(
        context=torch.randn(batch, tokens, width, generator=generator),
        pooled=torch.randn(batch, pooled, generator=generator) if pooled else None,
    )


@pytest.fixture
def fp32_manager() -> ModelManager:
    return ModelManager(torch.device("cpu"), torch.float32, budget_bytes=2**32)


def assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert ours.abs().mean() > 1e-3, "a zero output would prove nothing"
    torch.testing.assert_close(ours, theirs, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    ("filename", "config"),
    [("flux1-dev.safetensors", TINY_FLUX_DEV), ("flux1-schnell.safetensors", TINY_FLUX_SCHNELL)],
)
def test_flux_forward_equals_diffusers_loading_path(
    test_models_dir: Path, fp32_manager: ModelManager, filename: str, config: FluxConfig
) -> None:
    path = test_models_dir / "diffusion_models" / filename
    model = load_diffusion_model(path, manager=fp32_manager)
    reference = flux_reference(path, "", config)
    latent = torch.randn(2, 16, 24, 32, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.9, 0.35])
    given = inputs(2)

    ours = model.apply_model(latent, sigma, given)

    default_guidance = torch.full((2,), 3.5) if config.guidance_embed else None
    assert_same(
        ours, run_flux_reference(reference, latent, sigma, given.context, given.pooled, default_guidance)
    )
    if config.guidance_embed:
        guided = ModelInputs(given.context, given.pooled, guidance=torch.tensor([2.0, 5.0]))
        expected = run_flux_reference(reference, latent, sigma, given.context, given.pooled, guided.guidance)
        assert_same(model.apply_model(latent, sigma, guided), expected)


def test_fp8_flux_checkpoint_forward_equals_diffusers_on_the_upcast_weights(
    test_models_dir: Path, fp32_manager: ModelManager
) -> None:
    path = test_models_dir / "checkpoints" / "flux1-schnell-fp8.safetensors"
    model, _, _ = load_checkpoint(
        path, manager=fp32_manager, tokenizer_roots=[test_models_dir / "text_encoders"]
    )
    reference = flux_reference(path, "model.diffusion_model.", TINY_FLUX_SCHNELL)
    latent = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.6])
    given = inputs(1)

    assert model.storage_dtype == torch.float8_e4m3fn
    linears = [m for m in model.module().modules() if isinstance(m, torch.nn.Linear)]
    assert {linear.weight.dtype for linear in linears} == {torch.float8_e4m3fn}
    assert_same(
        model.apply_model(latent, sigma, given),
        run_flux_reference(reference, latent, sigma, given.context, given.pooled, None),
    )


def test_auraflow_forward_equals_diffusers_loading_path(
    test_models_dir: Path, fp32_manager: ModelManager
) -> None:
    path = test_models_dir / "checkpoints" / "aura_flow_0.3.safetensors"
    model, _, _ = load_checkpoint(
        path, manager=fp32_manager, tokenizer_roots=[test_models_dir / "text_encoders"]
    )
    reference = reference_module(
        AuraFlowTransformer2DModel,
        TINY_AURAFLOW.diffusers_config(),
        convert_auraflow_transformer_checkpoint_to_diffusers(fp32(load_tensors(path, "model."))),
    )
    latent = torch.randn(2, 4, 32, 48, generator=torch.Generator().manual_seed(4))
    sigma = torch.tensor([1.0, 0.2])
    given = inputs(2, pooled=None)

    with torch.no_grad():
        expected = reference(hidden_states=latent, encoder_hidden_states=given.context, timestep=sigma).sample

    assert isinstance(model, LoadedDiffusionModel)
    assert_same(model.apply_model(latent, sigma, given), expected)


def test_vae_decode_equals_diffusers_loading_path(test_models_dir: Path, fp32_manager: ModelManager) -> None:
    path = test_models_dir / "checkpoints" / "aura_flow_0.3.safetensors"
    vae = load_vae(path, manager=fp32_manager)
    config = TINY_SDXL_VAE.diffusers_config()
    reference = reference_module(
        AutoencoderKL, config, convert_ldm_vae_checkpoint(fp32(load_tensors(path)), config)
    )
    latent = torch.randn(2, 4, 12, 16, generator=torch.Generator().manual_seed(5))

    with torch.no_grad():
        expected = ((reference.decode(latent).sample + 1) / 2).clamp(0, 1).movedim(1, -1)

    decoded = vae.decode(latent)
    assert decoded.shape == (2, 96, 128, 3)
    assert_same(decoded, expected)


AURAFLOW_CHECKPOINT = "checkpoints/aura_flow_0.3.safetensors"


def flux_conversion(config: FluxConfig) -> Callable[[Path], dict[str, torch.Tensor]]:
    return lambda path: diffusers_flux_converter(config.hidden_size)(fp32(load_tensors(path)))


def vae_conversion(config: AutoencoderConfig) -> Callable[[Path], dict[str, torch.Tensor]]:
    """diffusers' VAE conversion of a whole file: in a checkpoint, diffusers finds the VAE itself."""
    return lambda path: convert_ldm_vae_checkpoint(fp32(load_tensors(path)), config.diffusers_config())


@pytest.mark.parametrize(
    ("relative", "load", "reference"),
    [
        pytest.param(
            "diffusion_models/flux1-dev.safetensors",
            load_diffusion_model,
            flux_conversion(TINY_FLUX_DEV),
            id="flux-dev",
        ),
        pytest.param(
            "diffusion_models/flux1-schnell.safetensors",
            load_diffusion_model,
            flux_conversion(TINY_FLUX_SCHNELL),
            id="flux-schnell",
        ),
        pytest.param(
            "diffusion_models/flux1-fill-dev.safetensors",
            load_diffusion_model,
            flux_conversion(TINY_FLUX_FILL),
            id="flux-fill",
        ),
        pytest.param(
            "diffusion_models/flux1-canny-dev.safetensors",
            load_diffusion_model,
            flux_conversion(TINY_FLUX_CANNY),
            id="flux-canny",
        ),
        pytest.param(
            AURAFLOW_CHECKPOINT,
            load_diffusion_model,
            lambda path: convert_auraflow_transformer_checkpoint_to_diffusers(
                fp32(load_tensors(path, "model."))
            ),
            id="auraflow",
        ),
        pytest.param(AURAFLOW_CHECKPOINT, load_vae, vae_conversion(TINY_SDXL_VAE), id="sdxl-vae"),
        pytest.param("vae/ae.safetensors", load_vae, vae_conversion(TINY_FLUX_AE), id="flux-ae"),
    ],
)
def test_loaded_modules_hold_exactly_diffusers_conversion_of_the_file(
    test_models_dir: Path,
    fp32_manager: ModelManager,
    relative: str,
    load: Callable[..., LoadedDiffusionModel | VAE],
    reference: Callable[[Path], dict[str, torch.Tensor]],
) -> None:
    path = test_models_dir / relative
    loaded = load(path, manager=fp32_manager).module().state_dict()
    expected = reference(path)

    assert sorted(loaded) == sorted(expected)
    different = [name for name, tensor in expected.items() if not torch.equal(loaded[name], tensor)]
    assert different == []


@pytest.mark.parametrize(
    ("relative", "removed", "load", "diffusers_name"),
    [
        pytest.param(
            AURAFLOW_CHECKPOINT,
            "model.double_layers.1.mlpX.c_fc2.weight",
            load_diffusion_model,
            "joint_transformer_blocks.1.ff.linear_2.weight",
            id="auraflow",
        ),
        pytest.param(
            AURAFLOW_CHECKPOINT,
            "vae.decoder.up.1.block.0.conv1.bias",
            load_vae,
            "decoder.up_blocks.2.resnets.0.conv1.bias",
            id="sdxl-vae",
        ),
    ],
)
def test_a_file_lacking_a_tensor_is_refused_naming_what_is_missing(
    test_models_dir: Path,
    fp32_manager: ModelManager,
    tmp_path: Path,
    relative: str,
    removed: str,
    load: Callable[..., LoadedDiffusionModel | VAE],
    diffusers_name: str,
) -> None:
    tensors = load_tensors(test_models_dir / relative)
    del tensors[removed]
    truncated = tmp_path / "truncated.safetensors"
    save_file(tensors, truncated)

    with pytest.raises(WeightsFileError, match=rf"truncated\.safetensors.*missing \['{diffusers_name}"):
        load(truncated, manager=fp32_manager)


def test_key_mapping_copies_no_weight_but_the_swapped_final_modulation(test_models_dir: Path) -> None:
    """Loading holds a model's weights once: every converted tensor is a file tensor or a view of one,
    except the final layer's modulation, whose (shift, scale) halves are swapped into a new tensor."""
    aura = load_tensors(test_models_dir / AURAFLOW_CHECKPOINT, "model.")
    vae = load_tensors(test_models_dir / AURAFLOW_CHECKPOINT, "vae.")
    schnell = load_tensors(test_models_dir / "diffusion_models" / "flux1-schnell.safetensors")
    for source, converted in (
        (aura, auraflow.to_diffusers(aura)),
        (vae, autoencoder.to_diffusers(vae, TINY_SDXL_VAE)),
        (schnell, flux.to_diffusers(schnell, TINY_FLUX_SCHNELL)),
    ):
        storages = {tensor.untyped_storage().data_ptr() for tensor in source.values()}
        copied = {n for n, t in converted.items() if t.untyped_storage().data_ptr() not in storages}
        assert copied <= {"norm_out.linear.weight", "norm_out.linear.bias"}
