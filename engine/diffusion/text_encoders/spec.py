"""What a text-encoder file holds: which family of encoder, and its config as read from tensor shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.diffusion.text_encoders.clip_l import ClipLConfig
from engine.diffusion.text_encoders.t5 import T5EncoderConfig

TextEncoderFamily = Literal["clip_l", "t5xxl", "pile_t5xl"]

FAMILY_NAMES: dict[TextEncoderFamily, str] = {
    "clip_l": "CLIP-L",
    "t5xxl": "T5-XXL",
    "pile_t5xl": "Pile-T5-XL",
}
"""How messages name each family."""


@dataclass(frozen=True)
class TextEncoderSpec:
    family: TextEncoderFamily
    config: ClipLConfig | T5EncoderConfig

    @property
    def name(self) -> str:
        return FAMILY_NAMES[self.family]
