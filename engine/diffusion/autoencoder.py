"""The KL autoencoders (SDXL's VAE for AuraFlow, Flux's `ae.safetensors`) in the original LDM layout,
run by diffusers' AutoencoderKL.

diffusers' single-file converter maps the keys. Its config comes from an LDM YAML file, which a
ComfyUI-layout file does not come with, so the engine reads the config from tensor shapes: widths per
level, residual blocks per level, latent channels, whether the 1x1 quant convs exist (SDXL's VAE has
them, Flux's AE has not). The GroupNorm group count is not recorded; both families use 32, which is why
every width must be a multiple of 32.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

# The defining module, not `diffusers`: under TYPE_CHECKING its __init__ also binds the name to a
# placeholder class (utils.dummy_pt_objects) that a type checker takes for the real one.
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

from engine.diffusion.safetensors_file import TensorInfo
from engine.diffusion.weights import count_blocks

PREFIXES = ("vae.", "first_stage_model.", "")
"""All-in-one checkpoints keep the VAE under one of the first two; VAE files have no prefix."""

DETECTION_KEY = "decoder.conv_in.weight"
NORM_GROUPS = 32


@dataclass(frozen=True)
class AutoencoderConfig:
    """The autoencoder's shape (defaults: SDXL's VAE)."""

    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    latent_channels: int = 4
    in_channels: int = 3
    out_channels: int = 3
    use_quant_conv: bool = True
    mid_block_attention: bool = True

    @property
    def downscale_ratio(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def name(self) -> str:
        return f"VAE ({self.latent_channels} latent channels)"

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, TensorInfo]) -> AutoencoderConfig:
        """The config of an LDM-layout autoencoder from its tensors (any prefix already removed)."""
        levels = count_blocks(tensors, "decoder.up.")
        return cls(
            block_out_channels=tuple(
                tensors[f"decoder.up.{i}.block.0.conv2.weight"].shape[0] for i in range(levels)
            ),
            layers_per_block=count_blocks(tensors, "decoder.up.0.block.") - 1,
            latent_channels=tensors[DETECTION_KEY].shape[1],
            in_channels=tensors["encoder.conv_in.weight"].shape[1],
            out_channels=tensors["decoder.conv_out.weight"].shape[0],
            use_quant_conv="quant_conv.weight" in tensors,
            mid_block_attention="decoder.mid.attn_1.q.weight" in tensors,
        )

    def diffusers_config(self) -> dict[str, object]:
        levels = len(self.block_out_channels)
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "down_block_types": ("DownEncoderBlock2D",) * levels,
            "up_block_types": ("UpDecoderBlock2D",) * levels,
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels,
            "norm_num_groups": NORM_GROUPS,
            "use_quant_conv": self.use_quant_conv,
            "use_post_quant_conv": self.use_quant_conv,
            "mid_block_add_attention": self.mid_block_attention,
        }

    def create_module(self) -> AutoencoderKL:
        return AutoencoderKL(**self.diffusers_config())

    def to_diffusers(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return to_diffusers(tensors, self)


def find(tensors: Mapping[str, TensorInfo]) -> tuple[str, AutoencoderConfig] | None:
    """(prefix, config) of the autoencoder among a file's tensors, or None."""
    for prefix in PREFIXES:
        if prefix + DETECTION_KEY in tensors:
            part = {name[len(prefix) :]: info for name, info in tensors.items() if name.startswith(prefix)}
            return prefix, AutoencoderConfig.from_tensors(part)
    return None


def layout(config: AutoencoderConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of an LDM-layout KL autoencoder, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    widths, z = config.block_out_channels, config.latent_channels

    def conv(name: str, out_channels: int, in_channels: int, kernel: int = 3) -> None:
        shapes[f"{name}.weight"] = (out_channels, in_channels, kernel, kernel)
        shapes[f"{name}.bias"] = (out_channels,)

    def norm(name: str, channels: int) -> None:
        shapes[f"{name}.weight"] = (channels,)
        shapes[f"{name}.bias"] = (channels,)

    def resnet(name: str, in_channels: int, out_channels: int) -> None:
        norm(f"{name}.norm1", in_channels)
        conv(f"{name}.conv1", out_channels, in_channels)
        norm(f"{name}.norm2", out_channels)
        conv(f"{name}.conv2", out_channels, out_channels)
        if in_channels != out_channels:
            conv(f"{name}.nin_shortcut", out_channels, in_channels, kernel=1)

    def middle(name: str, channels: int) -> None:
        resnet(f"{name}.mid.block_1", channels, channels)
        if config.mid_block_attention:
            norm(f"{name}.mid.attn_1.norm", channels)
            for projection in ("q", "k", "v", "proj_out"):
                conv(f"{name}.mid.attn_1.{projection}", channels, channels, kernel=1)
        resnet(f"{name}.mid.block_2", channels, channels)

    conv("encoder.conv_in", widths[0], config.in_channels)
    channels = widths[0]
    for level, width in enumerate(widths):
        for j in range(config.layers_per_block):
            resnet(f"encoder.down.{level}.block.{j}", channels, width)
            channels = width
        if level < len(widths) - 1:
            conv(f"encoder.down.{level}.downsample.conv", width, width)
    middle("encoder", channels)
    norm("encoder.norm_out", channels)
    conv("encoder.conv_out", 2 * z, channels)

    channels = widths[-1]
    conv("decoder.conv_in", channels, z)
    middle("decoder", channels)
    for level in reversed(range(len(widths))):
        for j in range(config.layers_per_block + 1):
            resnet(f"decoder.up.{level}.block.{j}", channels, widths[level])
            channels = widths[level]
        if level > 0:
            conv(f"decoder.up.{level}.upsample.conv", channels, channels)
    norm("decoder.norm_out", channels)
    conv("decoder.conv_out", config.out_channels, channels)

    if config.use_quant_conv:
        conv("quant_conv", 2 * z, 2 * z, kernel=1)
        conv("post_quant_conv", z, z, kernel=1)
    return shapes


def to_diffusers(tensors: Mapping[str, torch.Tensor], config: AutoencoderConfig) -> dict[str, torch.Tensor]:
    """LDM-layout tensors (prefix removed) under AutoencoderKL's names, by diffusers' own converter.

    It renumbers the decoder's levels (from the bottom in LDM files, from the top in diffusers) and turns
    the mid-block attention's 1x1 convolutions into linear weights, as views: no tensor is copied. It needs
    only the level count from the config; a tensor it does not know is left out (loading then names what
    is missing).
    """
    return convert_ldm_vae_checkpoint(tensors, config.diffusers_config())
