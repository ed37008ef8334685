"""Which text encoder a set of tensors is, from names and shapes alone (no tensor is read).

Families are told apart as ComfyUI tells them: a CLIP text tower of at most 22 layers is CLIP-L;
a gated-GELU T5 encoder with one shared position-bias table is T5-XXL (whatever its width, so a
smaller T5 v1.1 is still recognised and loads at its own size); one with a table per block and
Pile-T5's 32128-token vocabulary is Pile-T5-XL. Anything else (CLIP-G, UMT5-XXL, LLMs) is not
one of the encoders the engine serves and gives None.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType

from engine.diffusion.safetensors_file import TensorInfo
from engine.diffusion.text_encoders import clip_l, t5
from engine.diffusion.text_encoders.spec import TextEncoderSpec

PILE_T5_VOCAB_SIZE = 32128


def detect_text_encoder(tensors: Mapping[str, TensorInfo]) -> TextEncoderSpec | None:
    """The family and config of the encoder in `tensors` (any file prefix already stripped), or None."""
    clip_config = clip_l.infer_config(tensors)
    if clip_config is not None:
        return TextEncoderSpec("clip_l", clip_config)
    t5_config = t5.infer_config(tensors)
    if t5_config is None:
        return None
    if not t5_config.bias_per_layer:
        return TextEncoderSpec("t5xxl", t5_config)
    if t5_config.vocab_size == PILE_T5_VOCAB_SIZE:
        return TextEncoderSpec("pile_t5xl", t5_config)
    return None


def architecture(spec: TextEncoderSpec) -> ModuleType:
    """The module that knows the encoder's layout, key mapping and transformers class (clip_l or t5)."""
    return clip_l if isinstance(spec.config, clip_l.ClipLConfig) else t5


def text_encoder_layout(spec: TextEncoderSpec) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the encoder in ComfyUI's file layout (no prefix), with its shape."""
    return architecture(spec).layout(spec.config)
