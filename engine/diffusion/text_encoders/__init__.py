"""Text encoders (CLIP-L, T5-XXL, Pile-T5-XL): detection, key mapping, tokenization and encoding.

The transformers themselves come from transformers; what is the engine's own is recognising the
encoders in ComfyUI-layout files, mapping their keys, and tokenizing and weighting prompts exactly as
ComfyUI does, so the same graph gives the same conditioning.
"""

from engine.diffusion.text_encoders.clip import CLIP, Tokens
from engine.diffusion.text_encoders.detect import detect_text_encoder, text_encoder_layout
from engine.diffusion.text_encoders.loading import (
    CHECKPOINT_PREFIXES,
    TextEncoderSource,
    UnsupportedTextEncodersError,
    load_clip,
    sources_in_checkpoint,
)
from engine.diffusion.text_encoders.spec import TextEncoderFamily, TextEncoderSpec
from engine.diffusion.text_encoders.tokenizer_files import TokenizerMismatchError, TokenizerNotFoundError

__all__ = [
    "CHECKPOINT_PREFIXES",
    "CLIP",
    "TextEncoderFamily",
    "TextEncoderSource",
    "TextEncoderSpec",
    "TokenizerMismatchError",
    "TokenizerNotFoundError",
    "Tokens",
    "UnsupportedTextEncodersError",
    "detect_text_encoder",
    "load_clip",
    "sources_in_checkpoint",
    "text_encoder_layout",
]
