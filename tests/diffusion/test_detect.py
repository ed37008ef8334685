"""Recognising files from names and shapes: full-size layouts as meta tensors (no memory), and refusals."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from diffusers.loaders.single_file_utils import (
    convert_auraflow_transformer_checkpoint_to_diffusers,
    convert_flux_transformer_checkpoint_to_diffusers,
    convert_ldm_vae_checkpoint,
)
from safetensors.torch import save_file

from engine.diffusion import auraflow, autoencoder, flux
from engine.diffusion.auraflow import AuraFlowConfig
from engine.diffusion.autoencoder import AutoencoderConfig
from engine.diffusion.detect import UnrecognizedModelError, identify, identify_tensors
from engine.diffusion.flux import FluxConfig
from engine.diffusion.safetensors_file import TensorInfo, WeightsFileError
from engine.diffusion.text_encoders import TextEncoderSpec, text_encoder_layout
from engine.diffusion.text_encoders.clip_l import ClipLConfig
from engine.diffusion.text_encoders.t5 import T5EncoderConfig

AURAFLOW_V03 = AuraFlowConfig(
    dim=3072,
    num_double_layers=4,
    num_single_layers=32,
    num_heads=12,
    cond_dim=2048,
    max_seq=9216,
    patch_size=2,
)
FLUX_DEV = FluxConfig(
    hidden_size=3072,
    num_heads=24,
    depth=19,
    depth_single_blocks=38,
    context_in_dim=4096,
    vec_in_dim=768,
    guidance_embed=True,
    axes_dim=(16, 56, 56),
)
FLUX_SCHNELL = FluxConfig(**{**FLUX_DEV.__dict__, "guidance_embed": False})
SDXL_VAE = AutoencoderConfig((128, 256, 512, 512), layers_per_block=2, latent_channels=4, use_quant_conv=True)
FLUX_AE = AutoencoderConfig(
    (128, 256, 512, 512), layers_per_block=2, latent_channels=16, use_quant_conv=False
)
"""The published models (COMFY.md §9), written out by hand rather than taken from the code under test."""

CLIP_L = TextEncoderSpec("clip_l", ClipLConfig(49408, 77, 768, 3072, 12))
T5_XXL = TextEncoderSpec("t5xxl", T5EncoderConfig(32128, 4096, 64, 10240, 24, 64, 32, bias_per_layer=False))
PILE_T5_XL = TextEncoderSpec(
    "pile_t5xl", T5EncoderConfig(32128, 2048, 64, 5120, 24, 32, 32, bias_per_layer=True)
)


def infos(
    shapes: Mapping[str, tuple[int, ...]], prefix: str = "", dtype: str = "BF16"
) -> dict[str, TensorInfo]:
    return {prefix + name: TensorInfo(dtype, shape) for name, shape in shapes.items()}


def meta(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}


def shapes_of(tensors: Mapping[str, torch.Tensor | None]) -> dict[str, tuple[int, ...]]:
    assert all(t is not None for t in tensors.values()), [k for k, t in tensors.items() if t is None]
    return {name: tuple(t.shape) for name, t in tensors.items()}  # type: ignore[union-attr]


def diffusers_shapes(config: FluxConfig | AuraFlowConfig | AutoencoderConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        module = config.create_module()
    return shapes_of(module.state_dict())


@pytest.mark.parametrize(
    ("filename", "published", "billions"),
    [
        ("flux1-dev.safetensors", FLUX_DEV, 11.90),
        ("flux1-schnell.safetensors", FLUX_SCHNELL, 11.89),
    ],
)
def test_full_size_flux_is_recognised_with_the_published_config(
    filename: str, published: FluxConfig, billions: float
) -> None:
    layout = flux.layout(published)
    for prefix in ("", "model.diffusion_model."):
        contents = identify_tensors(Path(filename), infos(layout, prefix))
        assert contents.diffusion_model is not None
        assert contents.diffusion_model.prefix == prefix
        assert contents.diffusion_model.config == published
    assert len(layout) == 780 - 4 * (not published.guidance_embed)
    assert round(sum(math.prod(shape) for shape in layout.values()) / 1e9, 2) == billions
    assert published.name == ("Flux dev" if published.guidance_embed else "Flux schnell")


@pytest.mark.parametrize("published", [FLUX_DEV, FLUX_SCHNELL])
def test_full_size_flux_mapping_agrees_with_diffusers_converter_and_model(published: FluxConfig) -> None:
    ours = shapes_of(flux.to_diffusers(meta(flux.layout(published)), published))
    theirs = shapes_of(convert_flux_transformer_checkpoint_to_diffusers(meta(flux.layout(published))))
    assert ours == theirs
    assert ours == diffusers_shapes(published)


def test_full_size_auraflow_v03_is_recognised_with_the_published_config() -> None:
    layout = auraflow.layout(AURAFLOW_V03)
    contents = identify_tensors(Path("aura_flow_0.3.safetensors"), infos(layout, "model."))
    assert contents.diffusion_model is not None
    assert contents.diffusion_model.prefix == "model."
    assert contents.diffusion_model.config == AURAFLOW_V03
    assert AURAFLOW_V03.mlp_hidden == 8192
    assert round(sum(math.prod(shape) for shape in layout.values()) / 1e9, 2) == 6.86


def test_full_size_auraflow_mapping_agrees_with_diffusers_converter_and_model() -> None:
    original = meta(auraflow.layout(AURAFLOW_V03))
    remaining = copy.copy(original)
    theirs = shapes_of(convert_auraflow_transformer_checkpoint_to_diffusers(remaining))
    ours = shapes_of(auraflow.to_diffusers(original))
    assert remaining == {}, "the layout has tensors diffusers' converter does not know"
    assert ours == theirs
    assert ours == diffusers_shapes(AURAFLOW_V03)


@pytest.mark.parametrize(("published", "channels"), [(SDXL_VAE, 4), (FLUX_AE, 16)])
def test_full_size_vaes_are_recognised_and_mapped_as_diffusers_maps_them(
    published: AutoencoderConfig, channels: int
) -> None:
    layout = autoencoder.layout(published)
    for prefix in ("", "vae.", "first_stage_model."):
        contents = identify_tensors(Path("ae.safetensors"), infos(layout, prefix))
        assert contents.vae is not None and contents.vae.config == published
        assert contents.vae.prefix == prefix
    assert published.latent_channels == channels and published.downscale_ratio == 8
    ours = shapes_of(autoencoder.to_diffusers(meta(layout), published))
    theirs = shapes_of(convert_ldm_vae_checkpoint(meta(layout), published.diffusers_config()))
    assert ours == theirs
    assert ours == diffusers_shapes(published)
    assert round(sum(math.prod(shape) for shape in layout.values()) / 1e6) == 84


def test_full_size_all_in_one_checkpoints_are_taken_apart() -> None:
    aura = {
        **infos(auraflow.layout(AURAFLOW_V03), "model."),
        **infos(text_encoder_layout(PILE_T5_XL), "text_encoders.pile_t5xl.transformer."),
        **infos(autoencoder.layout(SDXL_VAE), "first_stage_model."),
    }
    contents = identify_tensors(Path("aura_flow_0.3.safetensors"), aura)
    assert contents.describe() == "AuraFlow, Pile-T5-XL, VAE (4 latent channels)"
    assert [part.prefix for part in contents.text_encoders] == ["text_encoders.pile_t5xl.transformer."]
    assert contents.vae is not None and contents.vae.prefix == "first_stage_model."

    flux_checkpoint = {
        **infos(flux.layout(FLUX_SCHNELL), "model.diffusion_model.", dtype="F8_E4M3"),
        **infos(text_encoder_layout(CLIP_L), "text_encoders.clip_l.transformer."),
        **infos(text_encoder_layout(T5_XXL), "text_encoders.t5xxl.transformer."),
        **infos(autoencoder.layout(FLUX_AE), "vae."),
    }
    contents = identify_tensors(Path("flux1-schnell-fp8.safetensors"), flux_checkpoint)
    assert contents.describe() == "Flux schnell, CLIP-L, T5-XXL, VAE (16 latent channels)"
    assert contents.diffusion_model is not None and contents.diffusion_model.config == FLUX_SCHNELL


def test_standalone_text_encoders_are_recognised() -> None:
    contents = identify_tensors(Path("t5xxl_fp16.safetensors"), infos(text_encoder_layout(T5_XXL)))
    assert contents.describe() == "T5-XXL"
    assert contents.text_encoders[0].prefix == ""
    assert (
        identify_tensors(Path("clip_l.safetensors"), infos(text_encoder_layout(CLIP_L))).describe()
        == "CLIP-L"
    )


def test_the_test_models_are_recognised_from_their_files(test_models_dir: Path) -> None:
    described = {
        "checkpoints/aura_flow_0.3.safetensors": "AuraFlow, Pile-T5-XL, VAE (4 latent channels)",
        "checkpoints/aura_flow_0.2.safetensors": "AuraFlow, Pile-T5-XL, VAE (4 latent channels)",
        "checkpoints/flux1-schnell-fp8.safetensors": "Flux schnell, CLIP-L, T5-XXL, VAE (16 latent channels)",
        "diffusion_models/flux1-schnell.safetensors": "Flux schnell",
        "diffusion_models/flux1-dev.safetensors": "Flux dev",
        "vae/ae.safetensors": "VAE (16 latent channels)",
        "text_encoders/clip_l.safetensors": "CLIP-L",
        "text_encoders/t5xxl_fp16.safetensors": "T5-XXL",
    }
    for relative, description in described.items():
        assert identify(test_models_dir / relative).describe() == description


def test_a_file_matching_no_known_model_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "mystery.safetensors"
    save_file({"transformer.h.0.attn.c_attn.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(UnrecognizedModelError, match=r"mystery\.safetensors: not a model this engine runs"):
        identify(path)


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_pickle_files_are_refused_without_being_opened(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"model{suffix}"
    path.write_bytes(b"\x80\x04 not even read")
    with pytest.raises(WeightsFileError, match="pickles, which run arbitrary code"):
        identify(path)


def test_a_file_that_is_not_safetensors_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "truncated.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsFileError, match=r"truncated\.safetensors"):
        identify(path)


@pytest.mark.parametrize(
    ("family", "marker"),
    [
        ("Flux", flux.DETECTION_KEY),
        ("AuraFlow", auraflow.DETECTION_KEY),
        ("VAE", autoencoder.DETECTION_KEY),
    ],
)
def test_a_file_with_part_of_a_layout_is_refused_by_name(tmp_path: Path, family: str, marker: str) -> None:
    """A damaged or cut-down file: the tensor a family is recognised by, and nothing else of it."""
    path = tmp_path / "partial.safetensors"
    save_file({marker: torch.zeros(4)}, path)
    with pytest.raises(WeightsFileError, match=rf"partial\.safetensors: holds part of a {family} model"):
        identify(path)
