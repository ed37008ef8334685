"""Tiny random checkpoints in the real layouts, under the real file names, for tests and the demo.

Real weights cannot be downloaded here, so the engine writes its own: every file a ComfyUI user would
have for the AuraFlow and Flux example graphs and the Flux Fill, Canny and Kontext variants, in
ComfyUI's folder layout, at toy widths (a 1024x1024 image runs end to end on a CPU in seconds). The
values are random, so images are noise; every file says so in its metadata and the model manager warns
whenever one is loaded.

Toy sizes fit the text encoders' (written by `text_encoders.test_files`): T5-XXL and Pile-T5-XL states
are 32 wide, CLIP-L's pooled vector 64. Widths and depths are this module's choice; the structure
(block kinds, 2x2 packing, 8 register tokens, a 96x96 position table, a 4-level VAE) is the real one.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import SiglipVisionConfig, SiglipVisionModel

from engine.diffusion import auraflow, autoencoder, flux
from engine.diffusion.auraflow import AuraFlowConfig
from engine.diffusion.autoencoder import AutoencoderConfig
from engine.diffusion.flux import FluxConfig
from engine.diffusion.safetensors_file import RANDOM_TEST_WEIGHTS_METADATA
from engine.diffusion.text_encoders import CHECKPOINT_PREFIXES, TextEncoderFamily
from engine.diffusion.text_encoders.test_files import tiny_text_encoder_tensors, write_test_text_encoders

TINY_FLUX_SCHNELL = FluxConfig(
    hidden_size=64,
    num_heads=2,
    depth=2,
    depth_single_blocks=2,
    context_in_dim=32,
    vec_in_dim=64,
    guidance_embed=False,
    axes_dim=flux.rope_axes(32),
)
TINY_FLUX_DEV = dataclasses.replace(TINY_FLUX_SCHNELL, guidance_embed=True)
TINY_FLUX_FILL = dataclasses.replace(TINY_FLUX_DEV, in_channels=384)
"""img_in reads the latent, the masked image's latent and the 8x8-cell mask: (16 + 16 + 64) x 2x2."""
TINY_FLUX_CANNY = dataclasses.replace(TINY_FLUX_DEV, in_channels=128)
"""img_in reads the latent and the control image's latent: (16 + 16) x 2x2 (Depth has the same layout)."""
TINY_AURAFLOW = AuraFlowConfig(dim=64, num_double_layers=2, num_single_layers=2, num_heads=1, cond_dim=32)
TINY_SDXL_VAE = AutoencoderConfig(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=4)
TINY_FLUX_AE = AutoencoderConfig(
    block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=16, use_quant_conv=False
)
TINY_SIGLIP = SiglipVisionConfig(
    hidden_size=144,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=56,
    patch_size=14,
)
"""Flux Redux's SigLIP so400m (1152 wide, 16 heads of 72, 27 layers, 384 / 14 = 27 x 27 patches) shrunk:
two 72-wide heads, 4 x 4 patches of 14 pixels; the attention-pooling head is kept, as the real file has it."""
TINY_REDUX_HIDDEN = 3 * TINY_FLUX_SCHNELL.context_in_dim
"""Redux widens the SigLIP states to 3 x the Flux token width before projecting down to it."""


def siglip_layout(config: SiglipVisionConfig) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a SigLIP vision file (transformers' SiglipVisionModel keys)."""
    with torch.device("meta"):
        module = SiglipVisionModel(config)
    return {f"vision_model.{name}": tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def redux_layout(vision_width: int, hidden: int, token_width: int) -> dict[str, tuple[int, ...]]:
    return {
        "redux_up.weight": (hidden, vision_width),
        "redux_up.bias": (hidden,),
        "redux_down.weight": (token_width, hidden),
        "redux_down.bias": (token_width,),
    }


def random_tensors(
    shapes: Mapping[str, tuple[int, ...]], seed: int, dtype: torch.dtype = torch.float16, prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Random weights for a layout, the same for the same seed.

    Matrices and kernels are scaled by their fan-in and norm scales kept near one, so activations stay
    in range through every layer and images show structure rather than saturating.
    """
    generator = torch.Generator().manual_seed(seed)
    return {prefix + name: random_tensor(name, shape, generator).to(dtype) for name, shape in shapes.items()}


def random_tensor(name: str, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """One tensor of `random_tensors`, in float32 on the generator's device: the benchmark's full-size
    writer (engine.bench.weights) makes its files one tensor at a time with it, on the GPU if there is one."""
    values = torch.randn(shape, generator=generator, device=generator.device)
    if len(shape) >= 2 and not name.endswith(("positional_encoding", "register_tokens")):
        values /= math.sqrt(math.prod(shape[1:]))
    elif "norm" in name and name.endswith(("weight", "scale")):
        values = 1 + 0.1 * values
    else:
        values *= 0.1
    return values


def fp8(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every tensor in float8_e4m3fn, as ComfyUI saves a diffusion model it holds in fp8."""
    return {name: t.to(torch.float8_e4m3fn) for name, t in tensors.items()}


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path, metadata=RANDOM_TEST_WEIGHTS_METADATA)
    return path


def _text_encoder(family: TextEncoderFamily) -> dict[str, torch.Tensor]:
    """The tiny encoder's tensors where an all-in-one checkpoint keeps them."""
    prefix = CHECKPOINT_PREFIXES[family]
    return {prefix + name: t for name, t in tiny_text_encoder_tensors(family).items()}


def write_test_models(models_dir: str | Path) -> list[Path]:
    """Write every test model (and the tokenizers) under models_dir; returns the weight files written."""
    models = Path(models_dir)
    written = list(write_test_text_encoders(models).values())
    aura = {
        **random_tensors(auraflow.layout(TINY_AURAFLOW), seed=10, prefix="model."),
        **_text_encoder("pile_t5xl"),
        **random_tensors(autoencoder.layout(TINY_SDXL_VAE), seed=11, dtype=torch.bfloat16, prefix="vae."),
    }
    for name in ("aura_flow_0.3.safetensors", "aura_flow_0.2.safetensors"):
        written.append(_save(models / "checkpoints" / name, aura))
    schnell = random_tensors(flux.layout(TINY_FLUX_SCHNELL), seed=20, dtype=torch.bfloat16)
    written.append(_save(models / "diffusion_models" / "flux1-schnell.safetensors", schnell))
    dev = random_tensors(flux.layout(TINY_FLUX_DEV), seed=21, dtype=torch.bfloat16)
    written.append(_save(models / "diffusion_models" / "flux1-dev.safetensors", dev))
    variants = {
        "flux1-fill-dev.safetensors": (TINY_FLUX_FILL, 23),
        "flux1-canny-dev.safetensors": (TINY_FLUX_CANNY, 24),
        "flux1-kontext-dev.safetensors": (TINY_FLUX_DEV, 25),
    }
    for name, (config, seed) in variants.items():
        tensors = random_tensors(flux.layout(config), seed=seed, dtype=torch.bfloat16)
        written.append(_save(models / "diffusion_models" / name, tensors))
    flux_ae = random_tensors(autoencoder.layout(TINY_FLUX_AE), seed=22, dtype=torch.bfloat16)
    written.append(_save(models / "vae" / "ae.safetensors", flux_ae))
    all_in_one = {
        **fp8({f"model.diffusion_model.{name}": t for name, t in schnell.items()}),
        **_text_encoder("clip_l"),
        **_text_encoder("t5xxl"),
        **{f"vae.{name}": t for name, t in flux_ae.items()},
    }
    written.append(_save(models / "checkpoints" / "flux1-schnell-fp8.safetensors", all_in_one))
    siglip = random_tensors(siglip_layout(TINY_SIGLIP), seed=30, dtype=torch.bfloat16)
    written.append(_save(models / "clip_vision" / "sigclip_vision_patch14_384.safetensors", siglip))
    redux = random_tensors(
        redux_layout(TINY_SIGLIP.hidden_size, TINY_REDUX_HIDDEN, TINY_FLUX_SCHNELL.context_in_dim),
        seed=31,
        dtype=torch.bfloat16,
    )
    written.append(_save(models / "style_models" / "flux1-redux-dev.safetensors", redux))
    return written
