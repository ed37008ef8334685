"""Tiny random checkpoints in the real layouts, under the real file names, for tests and the demo.

Real weights cannot be downloaded here, so the engine writes its own: every file a ComfyUI user would
have for the AuraFlow and Flux example graphs, the Flux Fill, Canny and Kontext variants, USO (its
projector and DiT LoRA) and OneReward's Fill model (diffusers' layout, fp8) with its object-removal LoRA,
in ComfyUI's folder layout, at toy widths (a 1024x1024 image runs end to end on a CPU in seconds). The
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
    num_hidden_layers=27,
    num_attention_heads=2,
    image_size=56,
    patch_size=14,
)
"""Flux Redux's SigLIP so400m (1152 wide, 16 heads of 72, 27 layers, 384 / 14 = 27 x 27 patches) shrunk:
two 72-wide heads, 4 x 4 patches of 14 pixels, all 27 layers (USO reads layer -20); the attention-pooling
head is kept, as the real file has it."""
TINY_REDUX_HIDDEN = 3 * TINY_FLUX_SCHNELL.context_in_dim
"""Redux widens the SigLIP states to 3 x the Flux token width before projecting down to it."""
TINY_SIGLIP_TOKENS = (56 // 14) ** 2
"""TINY_SIGLIP's tokens per image (its image_size // patch_size, squared)."""
TINY_USO_STYLE_TOKENS = 4
"""USO's projector makes 64 style tokens per branch of SigLIP's 729; here 4 of 16."""
TINY_LORA_RANK = 4
"""LoRA files' rank (USO's DiT LoRA and the Fill LoRA are rank 128 and more)."""


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


def uso_projector_layout(
    image_tokens: int, style_tokens: int, vision_width: int, hidden: int
) -> dict[str, tuple[int, ...]]:
    """USO's `uso-flux1-projector-v1.safetensors`: three branches (SigLIP layers -2, -11, -20) under
    `feature_embedder.`, each mixing the image's tokens down to style tokens, a LayerNorm and a projection
    to the Flux width."""
    shapes: dict[str, tuple[int, ...]] = {}
    for branch in ("high", "mid", "low"):
        prefix = f"feature_embedder.{branch}_"
        shapes[prefix + "embedding_linear.0.weight"] = (style_tokens, image_tokens)
        shapes[prefix + "embedding_linear.0.bias"] = (style_tokens,)
        shapes[prefix + "layer_norm.weight"] = (vision_width,)
        shapes[prefix + "layer_norm.bias"] = (vision_width,)
        shapes[prefix + "projection.weight"] = (hidden, vision_width)
        shapes[prefix + "projection.bias"] = (hidden,)
    return shapes


def uso_lora_layout(config: FluxConfig, rank: int) -> dict[str, tuple[int, ...]]:
    """USO's `uso-flux1-dit-lora-v1.safetensors`, in the layout of USO's LoRA processors (XLabs' names):
    in each double block `processor.{qkv,proj}_lora{1,2}` (1: image stream, 2: text stream) on the fused
    qkv and the output projection; in each single block `processor.qkv_lora` on the qkv rows of linear1
    and `processor.proj_lora` on linear2 (reading the attention and MLP outputs together). No alphas: a
    change is up @ down."""
    h, m = config.hidden_size, config.mlp_hidden
    shapes: dict[str, tuple[int, ...]] = {}

    def lora(name: str, out_features: int, in_features: int) -> None:
        shapes[f"{name}.down.weight"] = (rank, in_features)
        shapes[f"{name}.up.weight"] = (out_features, rank)

    for i in range(config.depth):
        for stream in ("1", "2"):
            lora(f"double_blocks.{i}.processor.qkv_lora{stream}", 3 * h, h)
            lora(f"double_blocks.{i}.processor.proj_lora{stream}", h, h)
    for i in range(config.depth_single_blocks):
        lora(f"single_blocks.{i}.processor.qkv_lora", 3 * h, h)
        lora(f"single_blocks.{i}.processor.proj_lora", h, h + m)
    return shapes


def diffusers_flux_layout(config: FluxConfig) -> dict[str, tuple[int, ...]]:
    """A Flux transformer under diffusers' names, as diffusers' own FluxTransformer2DModel names and
    shapes its parameters (the layout of a pipeline's `transformer/` folder)."""
    with torch.device("meta"):
        module = config.create_module()
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def peft_flux_lora_layout(config: FluxConfig, rank: int) -> dict[str, tuple[int, ...]]:
    """A Flux LoRA as diffusers' pipelines save one from PEFT (`transformer.{module}.lora_A/lora_B.weight`,
    T2ITrainer's format): on every attention projection of the double and single blocks."""
    h = config.hidden_size
    layers = [
        f"transformer_blocks.{i}.attn.{name}"
        for i in range(config.depth)
        for name in (
            "to_q",
            "to_k",
            "to_v",
            "to_out.0",
            "add_q_proj",
            "add_k_proj",
            "add_v_proj",
            "to_add_out",
        )
    ]
    layers += [
        f"single_transformer_blocks.{i}.attn.{name}"
        for i in range(config.depth_single_blocks)
        for name in ("to_q", "to_k", "to_v")
    ]
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in layers:
        shapes[f"transformer.{layer}.lora_A.weight"] = (rank, h)
        shapes[f"transformer.{layer}.lora_B.weight"] = (h, rank)
    return shapes


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
    dev_all_in_one = {
        **all_in_one,
        **fp8({f"model.diffusion_model.{name}": t for name, t in dev.items()}),
    }
    written.append(_save(models / "checkpoints" / "flux1-dev-fp8.safetensors", dev_all_in_one))
    siglip = random_tensors(siglip_layout(TINY_SIGLIP), seed=30, dtype=torch.bfloat16)
    written.append(_save(models / "clip_vision" / "sigclip_vision_patch14_384.safetensors", siglip))
    redux = random_tensors(
        redux_layout(TINY_SIGLIP.hidden_size, TINY_REDUX_HIDDEN, TINY_FLUX_SCHNELL.context_in_dim),
        seed=31,
        dtype=torch.bfloat16,
    )
    written.append(_save(models / "style_models" / "flux1-redux-dev.safetensors", redux))
    uso = uso_projector_layout(
        TINY_SIGLIP_TOKENS,
        TINY_USO_STYLE_TOKENS,
        TINY_SIGLIP.hidden_size,
        TINY_FLUX_DEV.hidden_size,
    )
    written.append(
        _save(
            models / "model_patches" / "uso-flux1-projector-v1.safetensors",
            random_tensors(uso, seed=32, dtype=torch.bfloat16),
        )
    )
    uso_lora = random_tensors(uso_lora_layout(TINY_FLUX_DEV, TINY_LORA_RANK), seed=33, dtype=torch.bfloat16)
    written.append(_save(models / "loras" / "uso-flux1-dit-lora-v1.safetensors", uso_lora))
    one_reward = fp8(random_tensors(diffusers_flux_layout(TINY_FLUX_FILL), seed=26, dtype=torch.bfloat16))
    written.append(
        _save(
            models / "diffusion_models" / "flux.1-fill-dev-OneReward-transformer_fp8.safetensors", one_reward
        )
    )
    removal = random_tensors(
        peft_flux_lora_layout(TINY_FLUX_FILL, TINY_LORA_RANK), seed=34, dtype=torch.bfloat16
    )
    written.append(_save(models / "loras" / "removal_timestep_alpha-2-1740.safetensors", removal))
    return written
