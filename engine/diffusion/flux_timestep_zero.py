"""Flux's forward with reference tokens modulated as at timestep 0 ("index_timestep_zero").

FluxKontextMultiReferenceLatentMethod's "index_timestep_zero" places references as "index" does (index 1,
2, ... at the origin), and ComfyUI's Flux then modulates the reference tokens with the embedding of
timestep 0 (same guidance, same pooled text) while the image's and the text's tokens keep the step's:
the references read as clean images, not as noise at the current level. Every adaLN modulation in the
image stream (the double blocks' image half, the single blocks' joint sequence) is so chosen per token;
the text stream and the final layer keep the step's (the reference tokens are cut off before the output).

diffusers' FluxTransformer2DModel modulates a whole sequence with one vector, so this runs its blocks'
own layers in their order with the per-token choice added; with every token at the step's timestep it is
that module's forward, which is what the tests hold it to.
"""

from __future__ import annotations

import torch
from diffusers.models.transformers.transformer_flux import (
    FluxSingleTransformerBlock,
    FluxTransformer2DModel,
    FluxTransformerBlock,
)

Rotary = tuple[torch.Tensor, torch.Tensor]


def _per_token(step: torch.Tensor, zero: torch.Tensor, split: int, length: int) -> torch.Tensor:
    """[B, n] modulations -> [B, length, n]: the step's for tokens before `split`, timestep 0's after."""
    return torch.cat(
        [step[:, None].expand(-1, split, -1), zero[:, None].expand(-1, length - split, -1)], dim=1
    )


def _double_block(
    block: FluxTransformerBlock,
    image: torch.Tensor,
    text: torch.Tensor,
    temb: torch.Tensor,
    temb_zero: torch.Tensor,
    split: int,
    rotary: Rotary,
) -> tuple[torch.Tensor, torch.Tensor]:
    norm1 = block.norm1
    mod = _per_token(
        norm1.linear(norm1.silu(temb)), norm1.linear(norm1.silu(temb_zero)), split, image.shape[1]
    )
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
    normed = norm1.norm(image) * (1 + scale_msa) + shift_msa
    normed_text, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = block.norm1_context(text, emb=temb)
    attn, text_attn = block.attn(
        hidden_states=normed, encoder_hidden_states=normed_text, image_rotary_emb=rotary
    )

    image = image + gate_msa * attn
    image = image + gate_mlp * block.ff(block.norm2(image) * (1 + scale_mlp) + shift_mlp)

    text = text + c_gate_msa.unsqueeze(1) * text_attn
    normed_text = block.norm2_context(text) * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
    text = text + c_gate_mlp.unsqueeze(1) * block.ff_context(normed_text)
    if text.dtype == torch.float16:
        text = text.clip(-65504, 65504)
    return image, text


def _single_block(
    block: FluxSingleTransformerBlock,
    image: torch.Tensor,
    text: torch.Tensor,
    temb: torch.Tensor,
    temb_zero: torch.Tensor,
    split: int,
    rotary: Rotary,
) -> tuple[torch.Tensor, torch.Tensor]:
    text_length = text.shape[1]
    joint = torch.cat([text, image], dim=1)
    norm = block.norm
    mod = _per_token(
        norm.linear(norm.silu(temb)), norm.linear(norm.silu(temb_zero)), text_length + split, joint.shape[1]
    )
    shift, scale, gate = mod.chunk(3, dim=-1)
    normed = norm.norm(joint) * (1 + scale) + shift
    mlp = block.act_mlp(block.proj_mlp(normed))
    attn = block.attn(hidden_states=normed, image_rotary_emb=rotary)
    joint = joint + gate * block.proj_out(torch.cat([attn, mlp], dim=2))
    if joint.dtype == torch.float16:
        joint = joint.clip(-65504, 65504)
    return joint[:, text_length:], joint[:, :text_length]


def forward(
    module: FluxTransformer2DModel,
    tokens: torch.Tensor,
    context: torch.Tensor,
    pooled: torch.Tensor,
    timestep: torch.Tensor,
    guidance: torch.Tensor | None,
    img_ids: torch.Tensor,
    txt_ids: torch.Tensor,
    zero_from: int,
) -> torch.Tensor:
    """The module's output for packed `tokens` whose tokens from `zero_from` on (the references) are
    modulated as at timestep 0; arguments as FluxTransformer2DModel.forward takes them."""
    image = module.x_embedder(tokens)
    step = timestep.to(image.dtype) * 1000
    embed_args = () if guidance is None else (guidance.to(image.dtype) * 1000,)
    temb = module.time_text_embed(step, *embed_args, pooled)
    temb_zero = module.time_text_embed(torch.zeros_like(step), *embed_args, pooled)
    text = module.context_embedder(context)
    rotary = module.pos_embed(torch.cat((txt_ids, img_ids), dim=0))
    for double in module.transformer_blocks:
        assert isinstance(double, FluxTransformerBlock)
        image, text = _double_block(double, image, text, temb, temb_zero, zero_from, rotary)
    for single in module.single_transformer_blocks:
        assert isinstance(single, FluxSingleTransformerBlock)
        image, text = _single_block(single, image, text, temb, temb_zero, zero_from, rotary)
    return module.proj_out(module.norm_out(image, temb))
