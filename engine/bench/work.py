"""How much arithmetic an image costs: PERF.md's work model (2 FLOP per multiply-add).

A transformer forward is its matrix products (each weight matrix times the tokens that pass through
it: a Flux double block's image weights see the image tokens, its text weights the text tokens; single
blocks see all) plus attention (QK^T and AV: 4 x tokens^2 x width per layer). Modulation and embedding
layers run once per image, not per token, and are left out. At 1024^2 this gives PERF.md's 69.5 TFLOP
for Flux (4096 image + 256 text tokens) and 44.0 for AuraFlow (plus 8 register tokens). Text encoders
are counted the same way; the VAE decoder (convolutions) is counted by torch's FLOP counter on a
module with no storage (the meta device), which gives PERF.md's 10.5 TFLOP at 1024^2.

Achieved rates divide this work by measured time; the bound divides it by the matrix rate PERF.md
measured on an H200 (790 TFLOP/s of dense bf16).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.diffusion.auraflow import REGISTER_TOKENS, AuraFlowConfig
from engine.diffusion.autoencoder import AutoencoderConfig
from engine.diffusion.flux import PATCH, FluxConfig
from engine.diffusion.text_encoders import TextEncoderSpec
from engine.diffusion.text_encoders.clip_l import ClipLConfig

H200_BF16_FLOPS = 790e12
"""Dense bf16 matrix rate measured on an H200 (PERF.md; KINDS.md saw 769 to 798 TFLOP/s)."""

VAE_DOWNSCALE = 8
T5_TOKENS = 256
"""Flux and AuraFlow prompts are padded to at least 256 T5 tokens (the engine's tokenization rules)."""
CLIP_TOKENS = 77


@dataclass(frozen=True)
class ImageWork:
    """The arithmetic of one image of an endpoint at one size and step count, in FLOP."""

    image_tokens: int
    text_tokens: int
    transformer_per_forward: float
    forwards: int
    """Transformer forwards per image: steps, twice over with classifier-free guidance."""
    text_encoders: float
    vae_decode: float

    @property
    def transformer(self) -> float:
        return self.transformer_per_forward * self.forwards

    @property
    def total(self) -> float:
        return self.transformer + self.text_encoders + self.vae_decode

    @property
    def transformer_bound_seconds(self) -> float:
        """The least time the transformer's forwards can take at the H200's matrix rate (PERF.md's bound)."""
        return self.transformer / H200_BF16_FLOPS


def image_tokens(config: FluxConfig | AuraFlowConfig, side: int) -> int:
    patch = config.patch_size if isinstance(config, AuraFlowConfig) else PATCH
    return (side // VAE_DOWNSCALE // patch) ** 2


def flux_forward(config: FluxConfig, image: int, text: int) -> float:
    d, m = config.hidden_size, config.mlp_hidden
    tokens = image + text
    double_stream = 4 * d * d + 2 * d * m  # qkv and output projection, MLP in and out
    single = (3 * d + m) * d + (d + m) * d  # fused qkv + MLP in; fused output + MLP out
    weights = (config.depth * double_stream + config.depth_single_blocks * single) * tokens
    weights += (
        config.in_channels * d * image + config.context_in_dim * d * text + d * config.out_channels * image
    )
    attention = 4 * tokens * tokens * d * (config.depth + config.depth_single_blocks)
    return 2.0 * weights + attention


def auraflow_forward(config: AuraFlowConfig, image: int, text: int) -> float:
    d, m = config.dim, config.mlp_hidden
    tokens = image + text + REGISTER_TOKENS
    layer = 4 * d * d + 3 * d * m  # q, k, v, o and the SwiGLU's two inputs and output
    layers = config.num_double_layers + config.num_single_layers
    patch = config.patch_size**2
    weights = layers * layer * tokens
    weights += config.cond_dim * d * text + patch * (config.in_channels + config.out_channels) * d * image
    attention = 4 * tokens * tokens * d * layers
    return 2.0 * weights + attention


def transformer_forward(config: FluxConfig | AuraFlowConfig, image: int, text: int) -> float:
    if isinstance(config, FluxConfig):
        return flux_forward(config, image, text)
    return auraflow_forward(config, image, text)


def text_encoder(spec: TextEncoderSpec) -> float:
    """One prompt through the encoder (CLIP-L reads one 77-token window, T5 encoders 256 tokens)."""
    config = spec.config
    if isinstance(config, ClipLConfig):
        d, layers, tokens = config.hidden_size, config.num_layers, CLIP_TOKENS
        inner, layer = d, 4 * d * d + 2 * d * config.intermediate_size
    else:
        d, layers, tokens = config.d_model, config.num_layers, T5_TOKENS
        inner = config.d_kv * config.num_heads
        layer = 4 * d * inner + 3 * d * config.d_ff  # q, k, v, o; gated-GELU's two inputs and output
    return 2.0 * layer * layers * tokens + 4 * tokens * tokens * inner * layers


def vae_decode(config: AutoencoderConfig, side: int) -> float:
    """The decoder's FLOP for one image, counted by torch on storage-less (meta) tensors."""
    with torch.device("meta"):
        module = config.create_module()
        latent = torch.empty(1, config.latent_channels, side // VAE_DOWNSCALE, side // VAE_DOWNSCALE)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module.decode(latent)
    return float(counter.get_total_flops())


def image_work(
    config: FluxConfig | AuraFlowConfig,
    encoders: list[TextEncoderSpec],
    vae: AutoencoderConfig,
    side: int,
    steps: int,
    guided: bool,
) -> ImageWork:
    """One image: `steps` forwards (two each when `guided`: the cond and uncond predictions), the prompts
    through the encoders (with guidance the negative prompt too), and one VAE decode."""
    image = image_tokens(config, side)
    prompts = 2 if guided else 1
    return ImageWork(
        image_tokens=image,
        text_tokens=T5_TOKENS,
        transformer_per_forward=transformer_forward(config, image, T5_TOKENS),
        forwards=steps * prompts,
        text_encoders=prompts * sum(text_encoder(spec) for spec in encoders),
        vae_decode=vae_decode(vae, side),
    )
