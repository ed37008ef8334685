"""CLIP-L, the text tower of OpenAI's CLIP ViT-L/14: its config read from a file, its file layout, its module.

ComfyUI's `clip_l.safetensors` (and the `text_encoders.clip_l.transformer.` part of an all-in-one
checkpoint) keep Hugging Face's names under `text_model.`; transformers 5's `CLIPTextModel` names its
weights without that prefix, which is the whole of the key mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from transformers import CLIPTextConfig, CLIPTextModel

from engine.diffusion.safetensors_file import TensorInfo

FILE_PREFIX = "text_model."

HEAD_DIM = 64
"""OpenAI's CLIP text towers use 64-wide attention heads; files do not record the head count."""

LARGEST_LAYER_COUNT = 22
"""A text tower with a 23rd layer is CLIP-H (24 layers) or CLIP-G (32), as ComfyUI tells them apart."""

UNUSED_KEYS = frozenset({"text_model.embeddings.position_ids", "text_projection.weight", "logit_scale"})
"""Present in some files but not part of the text tower: a position-index buffer (rebuilt by the
module), and the projection and logit scale that only contrastive scoring uses. Flux takes the
unprojected pooled output, as ComfyUI gives it."""

V = TypeVar("V")
"""Whatever a name maps to: a tensor when loading, a shape when checking a layout."""

_LAYER = re.compile(r"^text_model\.encoder\.layers\.(\d+)\.")


@dataclass(frozen=True)
class ClipLConfig:
    vocab_size: int
    max_positions: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    projection_dim: int | None = None
    """Width of `text_projection.weight` when the file carries one (unused for encoding)."""

    @property
    def num_heads(self) -> int:
        return self.hidden_size // HEAD_DIM


def infer_config(tensors: Mapping[str, TensorInfo]) -> ClipLConfig | None:
    """The config of a CLIP-L text tower from its tensor shapes; None when the tensors are not one."""
    token = tensors.get("text_model.embeddings.token_embedding.weight")
    position = tensors.get("text_model.embeddings.position_embedding.weight")
    fc1 = tensors.get("text_model.encoder.layers.0.mlp.fc1.weight")
    if token is None or position is None or fc1 is None:
        return None
    num_layers = 1 + max(int(m.group(1)) for name in tensors if (m := _LAYER.match(name)))
    if num_layers > LARGEST_LAYER_COUNT or token.shape[1] % HEAD_DIM:
        return None
    projection = tensors.get("text_projection.weight")
    return ClipLConfig(
        vocab_size=token.shape[0],
        max_positions=position.shape[0],
        hidden_size=token.shape[1],
        intermediate_size=fc1.shape[0],
        num_layers=num_layers,
        projection_dim=projection.shape[0] if projection is not None else None,
    )


def layout(config: ClipLConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a CLIP-L file in ComfyUI's layout, with its shape."""
    hidden, inner = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "text_model.embeddings.token_embedding.weight": (config.vocab_size, hidden),
        "text_model.embeddings.position_embedding.weight": (config.max_positions, hidden),
        "text_model.final_layer_norm.weight": (hidden,),
        "text_model.final_layer_norm.bias": (hidden,),
    }
    for i in range(config.num_layers):
        layer = f"text_model.encoder.layers.{i}."
        for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[f"{layer}self_attn.{projection}.weight"] = (hidden, hidden)
            shapes[f"{layer}self_attn.{projection}.bias"] = (hidden,)
        for norm in ("layer_norm1", "layer_norm2"):
            shapes[f"{layer}{norm}.weight"] = (hidden,)
            shapes[f"{layer}{norm}.bias"] = (hidden,)
        shapes[f"{layer}mlp.fc1.weight"] = (inner, hidden)
        shapes[f"{layer}mlp.fc1.bias"] = (inner,)
        shapes[f"{layer}mlp.fc2.weight"] = (hidden, inner)
        shapes[f"{layer}mlp.fc2.bias"] = (hidden,)
    if config.projection_dim is not None:
        shapes["text_projection.weight"] = (config.projection_dim, hidden)
    return shapes


def module_state_dict(tensors: Mapping[str, V]) -> dict[str, V]:
    """File tensors (prefix already removed) renamed to `CLIPTextModel`'s parameter names."""
    return {
        name.removeprefix(FILE_PREFIX): tensor for name, tensor in tensors.items() if name not in UNUSED_KEYS
    }


def transformers_model(config: ClipLConfig) -> tuple[type[CLIPTextModel], CLIPTextConfig]:
    """The transformers class that runs a CLIP-L text tower, and its config."""
    return CLIPTextModel, CLIPTextConfig(
        vocab_size=config.vocab_size,
        max_position_embeddings=config.max_positions,
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        projection_dim=config.projection_dim or config.hidden_size,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
    )
