"""AuraFlow (v0.2, v0.3) in fal's original layout, run by diffusers' AuraFlowTransformer2DModel.

diffusers' single-file converter maps the keys. What it lacks is here: finding the model under a
checkpoint's prefix, and the config, which diffusers takes from a published repository's config file
and the engine reads from tensor shapes (so the tiny test models load through the same code). The head
count is not recorded (the attention's QK norms have no weights): AuraFlow's heads are 256 wide, and a
model narrower than one such head (a test model) has one.

One behaviour follows ComfyUI rather than diffusers: where the image's patches sit in the learned
position table. Both centre the patch grid in the table; ComfyUI rounds the offset of an odd-sized grid
down where diffusers rounds it up, and stretches the table (bilinear) for images larger than it, where
diffusers would index past its end.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from diffusers.loaders.single_file_utils import convert_auraflow_transformer_checkpoint_to_diffusers

# The defining module, not `diffusers`: under TYPE_CHECKING its __init__ also binds the name to a
# placeholder class (utils.dummy_pt_objects) that a type checker takes for the real one.
from diffusers.models.transformers.auraflow_transformer_2d import (
    AuraFlowPatchEmbed,
    AuraFlowTransformer2DModel,
    find_multiple,
)

from engine.diffusion.latent_formats import SDXL, LatentFormat
from engine.diffusion.patching import pad_to_patches
from engine.diffusion.protocols import ModelInputs
from engine.diffusion.safetensors_file import TensorInfo, WeightsFileError
from engine.diffusion.sampling.model_sampling import DiscreteFlow, FlowModelSampling
from engine.diffusion.weights import count_blocks

PREFIXES = ("model.", "model.diffusion_model.", "")
"""fal's all-in-one checkpoints keep the diffusion model under `model.`."""

DETECTION_KEY = "double_layers.0.attn.w1q.weight"
HEAD_DIM = 256
TIMESTEP_FEATURES = 256
REGISTER_TOKENS = 8
LATENT_CHANNELS = 4
DEFAULT_SHIFT = 1.73


@dataclass(frozen=True)
class AuraFlowConfig:
    """The MMDiT's shape (defaults: v0.3)."""

    dim: int = 3072
    num_double_layers: int = 4
    num_single_layers: int = 32
    num_heads: int = 12
    cond_dim: int = 2048
    """Width of the text encoder's token states (Pile-T5-XL)."""
    max_seq: int = 9216
    """Entries of the learned position table, a square grid of patches (96 x 96 in v0.3)."""
    patch_size: int = 2
    in_channels: int = LATENT_CHANNELS
    out_channels: int = LATENT_CHANNELS

    @property
    def mlp_hidden(self) -> int:
        """AuraFlow's SwiGLU width: 2/3 of 4x the model width, rounded up to a multiple of 256."""
        return find_multiple(int(2 * 4 * self.dim / 3), 256)

    @property
    def name(self) -> str:
        return "AuraFlow"

    @property
    def latent_format(self) -> LatentFormat:
        return SDXL

    def default_model_sampling(self) -> FlowModelSampling:
        return DiscreteFlow(DEFAULT_SHIFT)

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, TensorInfo]) -> AuraFlowConfig:
        """The config of an AuraFlow model from its tensors (any prefix already removed)."""
        dim, patch_features = tensors["init_x_linear.weight"].shape
        patch_size = math.isqrt(patch_features // LATENT_CHANNELS)
        config = cls(
            dim=dim,
            num_double_layers=count_blocks(tensors, "double_layers."),
            num_single_layers=count_blocks(tensors, "single_layers."),
            num_heads=dim // HEAD_DIM if dim % HEAD_DIM == 0 else 1,
            cond_dim=tensors["cond_seq_linear.weight"].shape[1],
            max_seq=tensors["positional_encoding"].shape[1],
            patch_size=patch_size,
            out_channels=tensors["final_linear.weight"].shape[0] // patch_size**2,
        )
        mlp_hidden = tensors["double_layers.0.mlpX.c_fc1.weight"].shape[0]
        registers = tensors["register_tokens"].shape[1]
        if patch_size**2 * LATENT_CHANNELS != patch_features or mlp_hidden != config.mlp_hidden:
            raise WeightsFileError("an AuraFlow-like model with an unusual patch or MLP size cannot be run")
        if registers != REGISTER_TOKENS or tensors["t_embedder.mlp.0.weight"].shape[0] != dim:
            raise WeightsFileError(
                "an AuraFlow-like model with unusual register tokens or conditioning cannot be run"
            )
        return config

    def diffusers_config(self) -> dict[str, object]:
        return {
            "sample_size": 64,
            "patch_size": self.patch_size,
            "in_channels": self.in_channels,
            "num_mmdit_layers": self.num_double_layers,
            "num_single_dit_layers": self.num_single_layers,
            "attention_head_dim": self.dim // self.num_heads,
            "num_attention_heads": self.num_heads,
            "joint_attention_dim": self.cond_dim,
            "caption_projection_dim": self.dim,
            "out_channels": self.out_channels,
            "pos_embed_max_size": self.max_seq,
        }

    def create_module(self) -> AuraFlowTransformer2DModel:
        """diffusers' model with ComfyUI's placement of the position table (see the module docstring)."""
        module = AuraFlowTransformer2DModel(**self.diffusers_config())
        module.pos_embed = ComfyPositionedPatchEmbed(
            patch_size=self.patch_size,
            in_channels=self.in_channels,
            embed_dim=self.dim,
            pos_embed_max_size=self.max_seq,
        )
        return module

    def to_diffusers(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return to_diffusers(tensors)

    def predict(
        self, module: AuraFlowTransformer2DModel, x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs
    ) -> torch.Tensor:
        """The velocity for latent x [B, 4, h, w] at sigma [B] (the transformer scales it by 1000 itself)."""
        height, width = x.shape[-2:]
        padded = pad_to_patches(x, self.patch_size)
        velocity = module(
            hidden_states=padded, encoder_hidden_states=inputs.context, timestep=sigma, return_dict=False
        )[0]
        return velocity[:, :, :height, :width]


class ComfyPositionedPatchEmbed(AuraFlowPatchEmbed):
    """AuraFlow's patch embedding, taking its slice of the position table where ComfyUI takes it."""

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        b, c, h, w = latent.shape
        p = self.patch_size
        patches = (
            latent.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).flatten(-3).flatten(1, 2)
        )
        return self.proj(patches) + self.positions(h // p, w // p).to(patches.dtype)

    def positions(self, rows: int, columns: int) -> torch.Tensor:
        """[1, rows*columns, dim]: the centred rows x columns window of the (stretched if needed) table."""
        side = math.isqrt(self.pos_embed_max_size)
        table = self.pos_embed.reshape(1, side, side, -1)
        if max(rows, columns) > side:
            side = max(rows, columns)
            grid = torch.nn.functional.interpolate(
                table.movedim(-1, 1).float(), (side, side), mode="bilinear"
            )
            table = grid.movedim(1, -1).to(self.pos_embed.dtype)
        top, left = (side - rows) // 2, (side - columns) // 2
        return table[:, top : top + rows, left : left + columns].reshape(1, rows * columns, -1)


def find(tensors: Mapping[str, TensorInfo]) -> tuple[str, AuraFlowConfig] | None:
    """(prefix, config) of the AuraFlow diffusion model among a file's tensors, or None."""
    for prefix in PREFIXES:
        if prefix + DETECTION_KEY in tensors:
            part = {name[len(prefix) :]: info for name, info in tensors.items() if name.startswith(prefix)}
            return prefix, AuraFlowConfig.from_tensors(part)
    return None


def layout(config: AuraFlowConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of an AuraFlow model in fal's original layout, with its shape."""
    d, m, p = config.dim, config.mlp_hidden, config.patch_size
    shapes: dict[str, tuple[int, ...]] = {
        "positional_encoding": (1, config.max_seq, d),
        "register_tokens": (1, REGISTER_TOKENS, d),
        "cond_seq_linear.weight": (d, config.cond_dim),
        "init_x_linear.weight": (d, p * p * config.in_channels),
        "init_x_linear.bias": (d,),
        "t_embedder.mlp.0.weight": (d, TIMESTEP_FEATURES),
        "t_embedder.mlp.0.bias": (d,),
        "t_embedder.mlp.2.weight": (d, d),
        "t_embedder.mlp.2.bias": (d,),
        "final_linear.weight": (p * p * config.out_channels, d),
        "modF.1.weight": (2 * d, d),
    }

    def mlp(prefix: str) -> None:
        shapes[f"{prefix}.c_fc1.weight"] = (m, d)
        shapes[f"{prefix}.c_fc2.weight"] = (m, d)
        shapes[f"{prefix}.c_proj.weight"] = (d, m)

    for i in range(config.num_double_layers):
        layer = f"double_layers.{i}"
        for projection in ("w1q", "w1k", "w1v", "w1o", "w2q", "w2k", "w2v", "w2o"):
            shapes[f"{layer}.attn.{projection}.weight"] = (d, d)
        for stream in ("X", "C"):
            shapes[f"{layer}.mod{stream}.1.weight"] = (6 * d, d)
            mlp(f"{layer}.mlp{stream}")
    for i in range(config.num_single_layers):
        layer = f"single_layers.{i}"
        for projection in ("w1q", "w1k", "w1v", "w1o"):
            shapes[f"{layer}.attn.{projection}.weight"] = (d, d)
        shapes[f"{layer}.modCX.1.weight"] = (6 * d, d)
        mlp(f"{layer}.mlp")
    return shapes


def to_diffusers(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original-layout tensors (prefix removed) under diffusers' names, by diffusers' own converter.

    The converter takes the tensors it knows out of the dict it is given (a shallow copy here, so the
    caller's stays whole; no tensor is copied but the final modulation, whose halves it swaps) and answers
    None for a tensor it does not find: those are left out, so that loading names them as missing.
    """
    converted = convert_auraflow_transformer_checkpoint_to_diffusers(dict(tensors))
    return {name: tensor for name, tensor in converted.items() if tensor is not None}
