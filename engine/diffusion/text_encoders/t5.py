"""T5 v1.1 encoders (T5-XXL for Flux, Pile-T5-XL for AuraFlow): config read from a file, layout, module.

Both keep Hugging Face's names (`shared.weight`, `encoder.block.N.layer...`) in ComfyUI's files. They
differ in one structural way: T5 learns one relative-position bias table, in block 0, shared by every
layer; Pile-T5 is trained in the UMT5 style, with a table in every block. The tables' shape
[buckets, heads] is also the only place a file records the head count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

from engine.diffusion.safetensors_file import TensorInfo

RELATIVE_ATTENTION_MAX_DISTANCE = 128
"""Fixed by both model families (not stored in files): distances beyond it share the last bucket."""

V = TypeVar("V")
"""Whatever a name maps to: a tensor when loading, a shape when checking a layout."""

_BLOCK = re.compile(r"^encoder\.block\.(\d+)\.")
_BIAS = "encoder.block.{}.layer.0.SelfAttention.relative_attention_bias.weight"
TIED_EMBEDDING = "encoder.embed_tokens.weight"
"""Some files repeat `shared.weight` under this name (the encoder's view of the same table)."""


@dataclass(frozen=True)
class T5EncoderConfig:
    vocab_size: int
    d_model: int
    d_kv: int
    d_ff: int
    num_layers: int
    num_heads: int
    relative_attention_num_buckets: int
    bias_per_layer: bool
    """UMT5 style (Pile-T5): every block has its own relative-position bias table."""


def infer_config(tensors: Mapping[str, TensorInfo]) -> T5EncoderConfig | None:
    """The config of a gated-GELU T5 encoder from its tensor shapes; None when the tensors are not one."""
    bias = tensors.get(_BIAS.format(0))
    query = tensors.get("encoder.block.0.layer.0.SelfAttention.q.weight")
    gate = tensors.get("encoder.block.0.layer.1.DenseReluDense.wi_0.weight")
    embedding = tensors.get("shared.weight") or tensors.get(TIED_EMBEDDING)
    if bias is None or query is None or gate is None or embedding is None:
        return None
    buckets, heads = bias.shape
    num_layers = 1 + max(int(m.group(1)) for name in tensors if (m := _BLOCK.match(name)))
    return T5EncoderConfig(
        vocab_size=embedding.shape[0],
        d_model=embedding.shape[1],
        d_kv=query.shape[0] // heads,
        d_ff=gate.shape[0],
        num_layers=num_layers,
        num_heads=heads,
        relative_attention_num_buckets=buckets,
        bias_per_layer=_BIAS.format(1) in tensors,
    )


def layout(config: T5EncoderConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor of a T5 encoder file in ComfyUI's layout, with its shape."""
    d, inner, ff = config.d_model, config.d_kv * config.num_heads, config.d_ff
    shapes: dict[str, tuple[int, ...]] = {"shared.weight": (config.vocab_size, d)}
    for i in range(config.num_layers):
        attention = f"encoder.block.{i}.layer.0."
        for projection in ("q", "k", "v"):
            shapes[f"{attention}SelfAttention.{projection}.weight"] = (inner, d)
        shapes[f"{attention}SelfAttention.o.weight"] = (d, inner)
        if i == 0 or config.bias_per_layer:
            shapes[_BIAS.format(i)] = (config.relative_attention_num_buckets, config.num_heads)
        shapes[f"{attention}layer_norm.weight"] = (d,)
        feed_forward = f"encoder.block.{i}.layer.1."
        shapes[f"{feed_forward}DenseReluDense.wi_0.weight"] = (ff, d)
        shapes[f"{feed_forward}DenseReluDense.wi_1.weight"] = (ff, d)
        shapes[f"{feed_forward}DenseReluDense.wo.weight"] = (d, ff)
        shapes[f"{feed_forward}layer_norm.weight"] = (d,)
    shapes["encoder.final_layer_norm.weight"] = (d,)
    return shapes


def module_state_dict(tensors: Mapping[str, V]) -> dict[str, V]:
    """File tensors (prefix already removed) under the transformers encoder's names.

    The names already match; only the embedding may sit under its tied name alone, and is then
    moved to `shared.weight`, which transformers ties the encoder's embedding to.
    """
    state = {name: tensor for name, tensor in tensors.items() if name != TIED_EMBEDDING}
    if "shared.weight" not in state and TIED_EMBEDDING in tensors:
        state["shared.weight"] = tensors[TIED_EMBEDDING]
    return state


def transformers_model(
    config: T5EncoderConfig,
) -> tuple[type[T5EncoderModel] | type[UMT5EncoderModel], T5Config | UMT5Config]:
    """The transformers class that runs this encoder, and its config."""
    model_class, config_class = (
        (UMT5EncoderModel, UMT5Config) if config.bias_per_layer else (T5EncoderModel, T5Config)
    )
    return model_class, config_class(
        vocab_size=config.vocab_size,
        d_model=config.d_model,
        d_kv=config.d_kv,
        d_ff=config.d_ff,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        relative_attention_num_buckets=config.relative_attention_num_buckets,
        relative_attention_max_distance=RELATIVE_ATTENTION_MAX_DISTANCE,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
    )
