"""Flux.1 (dev, schnell and their variants) in Black Forest Labs' file layout, run by diffusers'
FluxTransformer2DModel.

The variants are told apart by the width of `img_in` (packed channels, 4 per latent channel): 64 for dev
and schnell (the noisy latent), 128 for Canny and Depth (the latent, then the control image's latent),
384 for Fill (the latent, the masked image's latent, then the mask cut into 8x8 pixel cells: 64 channels
per latent cell). Kontext has dev's layout: it is used, not stored, differently, with the reference
images' tokens after the image's, at positions of their own (first axis 1), and its output cut back to
the image's tokens.

The config is read from tensor shapes, so the published 12B files and the engine's tiny test files load
through the same code. Two things are not recorded in a file and follow BFL's choices: the RoPE split of
each attention head over (time, row, column) is 1 : 3.5 : 3.5 (16, 56, 56 of 128), and theta is 10000.

A file may also hold the transformer in diffusers' own layout (`transformer_blocks.0.attn.to_q.weight`,
`x_embedder.weight`: a diffusers pipeline's `transformer/` folder repackaged, as Comfy-Org ships OneReward's
Fill model). Those are FluxTransformer2DModel's names already, so they load as they are; the config is
read from their shapes in the same way.

The key mapping lives here, unlike AuraFlow's and the VAE's, because diffusers' own converter cannot
serve: every release the project allows hard-codes the full-size width (3072) where it splits the single
blocks' fused projection, so it cannot load the test models, and it copies each projection it splits
(`torch.cat` of one part), where this mapping keeps views of the file's tensors. The mapping is checked
against that converter on full-size layouts and against diffusers' loading path on tiny random weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import torch

# The defining module, not `diffusers`: under TYPE_CHECKING its __init__ also binds the name to a
# placeholder class (utils.dummy_pt_objects) that a type checker takes for the real one.
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel

from engine.diffusion import flux_timestep_zero
from engine.diffusion.latent_formats import FLUX, LatentFormat
from engine.diffusion.patching import pad_to_patches
from engine.diffusion.protocols import ModelInputs
from engine.diffusion.safetensors_file import TensorInfo, WeightsFileError
from engine.diffusion.sampling.model_sampling import DiscreteFlow, FlowModelSampling, FluxFlow
from engine.diffusion.weights import count_blocks, split_rows, swap_halves

PREFIXES = ("model.diffusion_model.", "")
"""All-in-one checkpoints keep the diffusion model under the first; BFL's own files have no prefix."""


@dataclass(frozen=True)
class LayoutNames:
    """Where a file layout keeps the tensors whose shapes give a Flux model's config."""

    layout: Literal["bfl", "diffusers"]
    detection: str
    """A tensor only this layout's Flux files have (its length is the attention head width)."""
    image_in: str
    first_mlp: str
    double_blocks: str
    single_blocks: str
    final: str
    text_in: str
    vector_in: str
    guidance: str
    """Present only in guidance-distilled models (dev, not schnell)."""


BFL_NAMES = LayoutNames(
    layout="bfl",
    detection="double_blocks.0.img_attn.norm.key_norm.scale",
    image_in="img_in.weight",
    first_mlp="double_blocks.0.img_mlp.0.weight",
    double_blocks="double_blocks.",
    single_blocks="single_blocks.",
    final="final_layer.linear.weight",
    text_in="txt_in.weight",
    vector_in="vector_in.in_layer.weight",
    guidance="guidance_in.in_layer.weight",
)
DIFFUSERS_NAMES = LayoutNames(
    layout="diffusers",
    detection="transformer_blocks.0.attn.norm_added_k.weight",
    image_in="x_embedder.weight",
    first_mlp="transformer_blocks.0.ff.net.0.proj.weight",
    double_blocks="transformer_blocks.",
    single_blocks="single_transformer_blocks.",
    final="proj_out.weight",
    text_in="context_embedder.weight",
    vector_in="time_text_embed.text_embedder.linear_1.weight",
    guidance="time_text_embed.guidance_embedder.linear_1.weight",
)
DETECTION_KEY = BFL_NAMES.detection
"""How a Flux model in BFL's layout is told apart from other models (as each architecture module has one)."""
TIMESTEP_FEATURES = 256
PATCH = 2
"""Latents are packed 2x2 into tokens before the transformer sees them."""

MASK_CELL = 8
"""Fill reads its mask as 8x8-pixel cells, one latent cell each, 64 channels."""

DEFAULT_GUIDANCE = 3.5
"""The distilled guidance strength dev runs at when a graph gives none (ComfyUI's FluxGuidance default)."""


@dataclass(frozen=True)
class FluxConfig:
    """BFL's FluxParams, as far as the weights determine them."""

    hidden_size: int = 3072
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    in_channels: int = 64
    out_channels: int = 64
    context_in_dim: int = 4096
    vec_in_dim: int = 768
    mlp_ratio: float = 4.0
    guidance_embed: bool = False
    axes_dim: tuple[int, int, int] = (16, 56, 56)
    file_layout: Literal["bfl", "diffusers"] = "bfl"
    """Whose names the file gives the tensors: BFL's (converted on loading) or diffusers' (loaded as is)."""

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def latent_channels(self) -> int:
        return self.out_channels // (PATCH * PATCH)

    @property
    def input_channels(self) -> int:
        """Latent channels the model reads: the noisy latent's, then any image it is conditioned on."""
        return self.in_channels // (PATCH * PATCH)

    @property
    def name(self) -> str:
        if self.input_channels > 2 * self.latent_channels:
            return "Flux Fill"
        if self.input_channels > self.latent_channels:
            return "Flux Canny/Depth"
        return "Flux dev" if self.guidance_embed else "Flux schnell"

    @property
    def latent_format(self) -> LatentFormat:
        return FLUX

    def default_model_sampling(self) -> FlowModelSampling:
        """Dev samples with its resolution-dependent shift (mu 1.15 until ModelSamplingFlux sets it); schnell
        with none."""
        return FluxFlow(1.15) if self.guidance_embed else DiscreteFlow(1.0)

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, TensorInfo], names: LayoutNames) -> FluxConfig:
        """The config of a Flux diffusion model from its tensors (any prefix already removed), whose
        names follow `names`' layout."""
        hidden, in_channels = tensors[names.image_in].shape
        head_dim = tensors[names.detection].shape[0]
        mlp_hidden = tensors[names.first_mlp].shape[0]
        config = cls(
            hidden_size=hidden,
            num_heads=hidden // head_dim,
            depth=count_blocks(tensors, names.double_blocks),
            depth_single_blocks=count_blocks(tensors, names.single_blocks),
            in_channels=in_channels,
            out_channels=tensors[names.final].shape[0],
            context_in_dim=tensors[names.text_in].shape[1],
            vec_in_dim=tensors[names.vector_in].shape[1],
            mlp_ratio=mlp_hidden / hidden,
            guidance_embed=names.guidance in tensors,
            axes_dim=rope_axes(head_dim),
            file_layout=names.layout,
        )
        if config.mlp_ratio != 4.0:
            raise WeightsFileError(f"a Flux model with MLP ratio {config.mlp_ratio} (not 4) cannot be run")
        return config

    def diffusers_config(self) -> dict[str, object]:
        return {
            "patch_size": 1,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "num_layers": self.depth,
            "num_single_layers": self.depth_single_blocks,
            "attention_head_dim": self.head_dim,
            "num_attention_heads": self.num_heads,
            "joint_attention_dim": self.context_in_dim,
            "pooled_projection_dim": self.vec_in_dim,
            "guidance_embeds": self.guidance_embed,
            "axes_dims_rope": self.axes_dim,
        }

    def create_module(self) -> FluxTransformer2DModel:
        return FluxTransformer2DModel(**self.diffusers_config())

    def to_diffusers(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The file's tensors under FluxTransformer2DModel's names (a diffusers-layout file's as they are)."""
        if self.file_layout == "diffusers":
            return dict(tensors)
        return to_diffusers(tensors, self)

    def predict(
        self, module: FluxTransformer2DModel, x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs
    ) -> torch.Tensor:
        return predict(module, self, x, sigma, inputs)


def rope_axes(head_dim: int) -> tuple[int, int, int]:
    """BFL's split of a head over the three position axes, scaled to the head width (128 -> 16, 56, 56)."""
    first = head_dim // 8
    rest = (head_dim - first) // 2
    axes = (first, rest, rest)
    if sum(axes) != head_dim or any(axis % 2 for axis in axes):
        raise WeightsFileError(
            f"a Flux model with {head_dim}-wide attention heads cannot be given rotary positions"
        )
    return axes


def find(tensors: Mapping[str, TensorInfo]) -> tuple[str, FluxConfig] | None:
    """(prefix, config) of the Flux diffusion model among a file's tensors (in BFL's or diffusers' layout),
    or None."""
    for prefix in PREFIXES:
        for names in (BFL_NAMES, DIFFUSERS_NAMES):
            if prefix + names.detection in tensors:
                part = {
                    name[len(prefix) :]: info for name, info in tensors.items() if name.startswith(prefix)
                }
                return prefix, FluxConfig.from_tensors(part, names)
    return None


def _linear(shapes: dict[str, tuple[int, ...]], name: str, out_features: int, in_features: int) -> None:
    shapes[f"{name}.weight"] = (out_features, in_features)
    shapes[f"{name}.bias"] = (out_features,)


def layout(config: FluxConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Flux diffusion model in BFL's layout, with its shape."""
    h, m, d = config.hidden_size, config.mlp_hidden, config.head_dim
    shapes: dict[str, tuple[int, ...]] = {}
    _linear(shapes, "img_in", h, config.in_channels)
    _linear(shapes, "txt_in", h, config.context_in_dim)
    embedders = {"time_in": TIMESTEP_FEATURES, "vector_in": config.vec_in_dim}
    if config.guidance_embed:
        embedders["guidance_in"] = TIMESTEP_FEATURES
    for name, features in embedders.items():
        _linear(shapes, f"{name}.in_layer", h, features)
        _linear(shapes, f"{name}.out_layer", h, h)
    for i in range(config.depth):
        for stream in ("img", "txt"):
            block = f"double_blocks.{i}.{stream}"
            _linear(shapes, f"{block}_mod.lin", 6 * h, h)
            _linear(shapes, f"{block}_attn.qkv", 3 * h, h)
            shapes[f"{block}_attn.norm.query_norm.scale"] = (d,)
            shapes[f"{block}_attn.norm.key_norm.scale"] = (d,)
            _linear(shapes, f"{block}_attn.proj", h, h)
            _linear(shapes, f"{block}_mlp.0", m, h)
            _linear(shapes, f"{block}_mlp.2", h, m)
    for i in range(config.depth_single_blocks):
        block = f"single_blocks.{i}"
        _linear(shapes, f"{block}.linear1", 3 * h + m, h)
        _linear(shapes, f"{block}.linear2", h, h + m)
        shapes[f"{block}.norm.query_norm.scale"] = (d,)
        shapes[f"{block}.norm.key_norm.scale"] = (d,)
        _linear(shapes, f"{block}.modulation.lin", 3 * h, h)
    _linear(shapes, "final_layer.linear", config.out_channels, h)
    _linear(shapes, "final_layer.adaLN_modulation.1", 2 * h, h)
    return shapes


def to_diffusers(tensors: Mapping[str, torch.Tensor], config: FluxConfig) -> dict[str, torch.Tensor]:
    """BFL-layout tensors (prefix removed) under FluxTransformer2DModel's names.

    Fused projections are cut apart (qkv; a single block's qkv + MLP input) and the final modulation's
    (shift, scale) halves are swapped into diffusers' (scale, shift) order.
    """
    h, m = config.hidden_size, config.mlp_hidden
    out: dict[str, torch.Tensor] = {}

    def move(source: str, target: str) -> None:
        out[f"{target}.weight"] = tensors[f"{source}.weight"]
        out[f"{target}.bias"] = tensors[f"{source}.bias"]

    def split(source: str, targets: list[str], sizes: list[int]) -> None:
        for suffix in ("weight", "bias"):
            for target, part in zip(targets, split_rows(tensors[f"{source}.{suffix}"], sizes), strict=True):
                out[f"{target}.{suffix}"] = part

    move("img_in", "x_embedder")
    move("txt_in", "context_embedder")
    embedders = {"time_in": "timestep_embedder", "vector_in": "text_embedder"}
    if config.guidance_embed:
        embedders["guidance_in"] = "guidance_embedder"
    for source, target in embedders.items():
        move(f"{source}.in_layer", f"time_text_embed.{target}.linear_1")
        move(f"{source}.out_layer", f"time_text_embed.{target}.linear_2")
    for i in range(config.depth):
        src, dst = f"double_blocks.{i}.", f"transformer_blocks.{i}."
        move(src + "img_mod.lin", dst + "norm1.linear")
        move(src + "txt_mod.lin", dst + "norm1_context.linear")
        split(src + "img_attn.qkv", [dst + "attn.to_q", dst + "attn.to_k", dst + "attn.to_v"], [h, h, h])
        split(src + "txt_attn.qkv", [dst + f"attn.add_{p}_proj" for p in "qkv"], [h, h, h])
        out[dst + "attn.norm_q.weight"] = tensors[src + "img_attn.norm.query_norm.scale"]
        out[dst + "attn.norm_k.weight"] = tensors[src + "img_attn.norm.key_norm.scale"]
        out[dst + "attn.norm_added_q.weight"] = tensors[src + "txt_attn.norm.query_norm.scale"]
        out[dst + "attn.norm_added_k.weight"] = tensors[src + "txt_attn.norm.key_norm.scale"]
        move(src + "img_attn.proj", dst + "attn.to_out.0")
        move(src + "txt_attn.proj", dst + "attn.to_add_out")
        move(src + "img_mlp.0", dst + "ff.net.0.proj")
        move(src + "img_mlp.2", dst + "ff.net.2")
        move(src + "txt_mlp.0", dst + "ff_context.net.0.proj")
        move(src + "txt_mlp.2", dst + "ff_context.net.2")
    for i in range(config.depth_single_blocks):
        src, dst = f"single_blocks.{i}.", f"single_transformer_blocks.{i}."
        targets = [dst + "attn.to_q", dst + "attn.to_k", dst + "attn.to_v", dst + "proj_mlp"]
        split(src + "linear1", targets, [h, h, h, m])
        move(src + "linear2", dst + "proj_out")
        move(src + "modulation.lin", dst + "norm.linear")
        out[dst + "attn.norm_q.weight"] = tensors[src + "norm.query_norm.scale"]
        out[dst + "attn.norm_k.weight"] = tensors[src + "norm.key_norm.scale"]
    move("final_layer.linear", "proj_out")
    for suffix in ("weight", "bias"):
        out[f"norm_out.linear.{suffix}"] = swap_halves(tensors[f"final_layer.adaLN_modulation.1.{suffix}"])
    return out


def pack(latent: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] (H, W even) -> [B, H/2 * W/2, C*4] tokens, each a 2x2 patch, row by row."""
    b, c, h, w = latent.shape
    patches = latent.reshape(b, c, h // PATCH, PATCH, w // PATCH, PATCH).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(b, (h // PATCH) * (w // PATCH), c * PATCH * PATCH)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack` for a latent of `height` x `width`."""
    b, _, features = tokens.shape
    c = features // (PATCH * PATCH)
    patches = tokens.reshape(b, height // PATCH, width // PATCH, c, PATCH, PATCH).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(b, c, height, width)


def image_ids(
    height: int, width: int, device: torch.device, index: int = 0, top: int = 0, left: int = 0
) -> torch.Tensor:
    """[H*W, 3] positions (index, top + row, left + column) of packed tokens, as BFL numbers them (the
    image's index is 0; a Kontext reference's is 1)."""
    rows = torch.arange(height, device=device).repeat_interleave(width) + top
    columns = torch.arange(width, device=device).repeat(height) + left
    return torch.stack([torch.full_like(rows, index), rows, columns], dim=-1).float()


def model_input(config: FluxConfig, x: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
    """The latent the transformer reads: x [B, 16, h, w] in model space, with the image (Canny, Depth) or
    the masked image and mask (Fill) the weights expect after it, as ComfyUI's Flux concat_cond builds them.

    A missing image is a zero VAE latent (shifted into model space); a missing mask repaints everything.
    """
    if config.input_channels <= config.latent_channels:
        return x
    image = inputs.concat_image
    if image is None:
        image = torch.zeros_like(x)
    image = config.latent_format.process_in(image.to(x.dtype))
    if config.input_channels <= 2 * config.latent_channels:
        return torch.cat([x, image], dim=1)
    mask = inputs.concat_mask
    if mask is None:
        mask = torch.ones(x.shape[0], 1, x.shape[-2] * MASK_CELL, x.shape[-1] * MASK_CELL)
    cells = torch.nn.functional.pixel_unshuffle(mask.to(device=x.device, dtype=x.dtype), MASK_CELL)
    return torch.cat([x, image, cells], dim=1)


def reference_tokens(
    config: FluxConfig, x: torch.Tensor, inputs: ModelInputs
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Kontext's reference tokens and their positions, placed as ComfyUI's Flux places them:
    - "offset": index 1, each reference beside (right of, or below) those before it;
    - "index": index 1, 2, ... per reference, all at the origin;
    - "uxo" (UNO/USO): index 0, each past the image's and the previous references' bottom-right corner;
    - "index_timestep_zero": as "index" (predict then modulates them as at timestep 0).
    """
    if not inputs.reference_latents:
        return None
    if config.input_channels != config.latent_channels:
        raise ValueError(f"reference latents (Kontext) cannot be given to {config.name}")
    h_len, w_len = (-(-size // PATCH) for size in x.shape[-2:])
    tokens, ids = [], []
    height = width = index = 0
    for reference in inputs.reference_latents:
        top = left = 0
        ref_h, ref_w = reference.shape[-2:]
        if inputs.reference_method in ("index", "index_timestep_zero"):
            index += 1
        elif inputs.reference_method == "uxo":
            index, top, left = 0, h_len * PATCH + height, w_len * PATCH + width
            height, width = height + ref_h, width + ref_w
        else:
            index = 1
            if ref_h + height > ref_w + width:
                left = width
            else:
                top = height
            height, width = max(height, ref_h + top), max(width, ref_w + left)
        padded = pad_to_patches(config.latent_format.process_in(reference.to(x.dtype)), PATCH)
        tokens.append(pack(padded))
        ids.append(
            image_ids(
                padded.shape[-2] // PATCH,
                padded.shape[-1] // PATCH,
                x.device,
                index,
                (top + PATCH // 2) // PATCH,
                (left + PATCH // 2) // PATCH,
            )
        )
    return torch.cat(tokens, dim=1), torch.cat(ids)


@contextmanager
def _text_prefixed(module: FluxTransformer2DModel, prefix: torch.Tensor) -> Iterator[None]:
    """The module putting `prefix` [B, N, hidden] before the text tokens right after projecting them
    (where ComfyUI's post-input patches act, so the tokens join the text stream at position 0)."""

    def prepend(_: torch.nn.Module, __: object, projected: torch.Tensor) -> torch.Tensor:
        return torch.cat([prefix.to(projected.dtype), projected], dim=1)

    hook = module.context_embedder.register_forward_hook(prepend)
    try:
        yield
    finally:
        hook.remove()


def predict(
    module: FluxTransformer2DModel,
    config: FluxConfig,
    x: torch.Tensor,
    sigma: torch.Tensor,
    inputs: ModelInputs,
) -> torch.Tensor:
    """The velocity for latent x [B, 16, h, w] at sigma [B] (the transformer scales it by 1000 itself)."""
    height, width = x.shape[-2:]
    padded = pad_to_patches(model_input(config, x, inputs), PATCH)
    tokens = pack(padded)
    ids = image_ids(padded.shape[-2] // PATCH, padded.shape[-1] // PATCH, x.device)
    image_tokens = tokens.shape[1]
    references = reference_tokens(config, x, inputs)
    if references is not None:
        tokens = torch.cat([tokens, references[0]], dim=1)
        ids = torch.cat([ids, references[1]])
    context = inputs.context
    pooled = inputs.pooled
    if pooled is None:
        pooled = torch.zeros(x.shape[0], config.vec_in_dim, device=x.device, dtype=x.dtype)
    guidance = None
    if config.guidance_embed:
        guidance = inputs.guidance
        if guidance is None:
            guidance = torch.full((x.shape[0],), DEFAULT_GUIDANCE, device=x.device, dtype=torch.float32)
    text_tokens = context.shape[1]
    with ExitStack() as stack:
        if inputs.text_prefix is not None:
            stack.enter_context(_text_prefixed(module, inputs.text_prefix))
            text_tokens += inputs.text_prefix.shape[1]
        txt_ids = torch.zeros(text_tokens, 3, device=x.device)
        if references is not None and inputs.reference_method == "index_timestep_zero":
            velocity = flux_timestep_zero.forward(
                module, tokens, context, pooled, sigma, guidance, ids, txt_ids, zero_from=image_tokens
            )
        else:
            velocity = module(
                hidden_states=tokens,
                encoder_hidden_states=context,
                pooled_projections=pooled,
                timestep=sigma,
                img_ids=ids,
                txt_ids=txt_ids,
                guidance=guidance,
                return_dict=False,
            )[0]
    return unpack(velocity[:, :image_tokens], padded.shape[-2], padded.shape[-1])[:, :, :height, :width]
