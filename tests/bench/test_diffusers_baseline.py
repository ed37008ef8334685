"""The baseline's loading at full size, without the memory: diffusers' converters on storage-less tensors.

The GPU run builds diffusers' models from the benchmark's full-size files through diffusers' own
single-file converters. Here the same layouts, as meta tensors, go through the same functions into the
same model classes with strict loading, so a tensor the converter does not place (or places at the wrong
shape) fails here rather than in the device call.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch
from diffusers.loaders.single_file_utils import (
    convert_auraflow_transformer_checkpoint_to_diffusers,
    convert_flux_transformer_checkpoint_to_diffusers,
)
from diffusers.models.transformers.auraflow_transformer_2d import AuraFlowTransformer2DModel
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel

from engine.bench.diffusers_runs import (
    FLUX_AE_SCALING,
    SDXL_VAE_SCALING,
    assign_weights,
    diffusers_vae,
    flux_converter,
    under_prefix,
)
from engine.bench.weights import FULL, weight_files

META = torch.device("meta")


def meta_tensors(layout: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, dtype=torch.bfloat16, device=META) for name, shape in layout.items()}


def test_the_full_width_converter_is_diffusers_own() -> None:
    assert flux_converter(3072) is convert_flux_transformer_checkpoint_to_diffusers
    assert flux_converter(64) is not convert_flux_transformer_checkpoint_to_diffusers


@pytest.mark.parametrize("key", ["flux_schnell", "flux_dev"])
def test_full_size_flux_files_load_into_diffusers_model(key: str) -> None:
    config = FULL.flux_schnell if key == "flux_schnell" else FULL.flux_dev
    converted = flux_converter(3072)(meta_tensors(weight_files(FULL)[key].layout))
    module = assign_weights(
        lambda: FluxTransformer2DModel(**config.diffusers_config()), converted, META, torch.bfloat16
    )
    assert sum(p.numel() for p in module.parameters()) / 1e9 == pytest.approx(11.90, abs=0.01)
    assert module.config.guidance_embeds is (key == "flux_dev")


def test_full_size_auraflow_checkpoint_loads_into_diffusers_models() -> None:
    tensors = meta_tensors(weight_files(FULL)["aura_flow"].layout)
    transformer = assign_weights(
        lambda: AuraFlowTransformer2DModel(**FULL.auraflow.diffusers_config()),
        convert_auraflow_transformer_checkpoint_to_diffusers(under_prefix(tensors, "model.")),
        META,
        torch.bfloat16,
    )
    assert sum(p.numel() for p in transformer.parameters()) / 1e9 == pytest.approx(6.86, abs=0.01)
    vae = diffusers_vae(under_prefix(tensors, "vae."), FULL.sdxl_vae, SDXL_VAE_SCALING, META, torch.bfloat16)
    assert vae.config.latent_channels == 4 and vae.config.scaling_factor == 0.13025


def test_full_size_flux_ae_loads_into_diffusers_model() -> None:
    vae = diffusers_vae(
        meta_tensors(weight_files(FULL)["flux_ae"].layout),
        FULL.flux_ae,
        FLUX_AE_SCALING,
        META,
        torch.bfloat16,
    )
    assert vae.config.latent_channels == 16 and not vae.config.use_quant_conv
    assert (vae.config.scaling_factor, vae.config.shift_factor) == (0.3611, 0.1159)
