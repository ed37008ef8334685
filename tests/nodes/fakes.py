"""Stand-ins with closed-form behaviour for the model values some nodes take (VAE, CLIP)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


class AveragingVAE:
    """A "VAE" whose latent is each 8x8 cell's mean RGB: [B, H, W, C] -> [B, 3, H/8, W/8], cropping to a
    multiple of 8 centred as the real VAE does, so what went into each cell can be read back."""

    downscale_ratio = 8
    latent_channels = 3

    def __init__(self) -> None:
        self.encoded: list[torch.Tensor] = []

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        height, width = pixels.shape[1] // 8 * 8, pixels.shape[2] // 8 * 8
        top, left = (pixels.shape[1] % 8) // 2, (pixels.shape[2] % 8) // 2
        cropped = pixels[:, top : top + height, left : left + width, :3]
        self.encoded.append(cropped)
        return F.avg_pool2d(cropped.movedim(-1, 1), 8)


@dataclass
class RecordingCLIP:
    """A CLIP whose token windows are the prompt text itself, and that records what it was asked to encode."""

    encoders: dict[str, Any] = field(default_factory=lambda: {"l": None, "t5xxl": None})
    encoded: list[dict[str, str]] = field(default_factory=list)

    def tokenize(self, text: str) -> dict[str, str]:
        return {key: f"{key}:{text}" for key in self.encoders}

    def encode_from_tokens_scheduled(self, tokens: dict[str, str]) -> list[list[Any]]:
        self.encoded.append(dict(tokens))
        return [[torch.zeros(1, 4, 8), {"pooled_output": torch.zeros(1, 8)}]]
