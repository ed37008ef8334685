"""How each VAE's latent space is scaled before the diffusion model sees it, and how it looks as colour.

The RGB factors are a linear map from one latent pixel (in the diffusion model's space, after
`process_in`) to an approximate RGB value in -1..1: the published least-squares fit for each
autoencoder. They give a per-step preview for the cost of one small matrix product, no VAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentFormat:
    name: str
    channels: int
    scale_factor: float
    shift_factor: float = 0.0
    rgb_factors: tuple[tuple[float, float, float], ...] = ()
    """One (R, G, B) row per latent channel."""
    rgb_bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latent -> diffusion-model latent."""
        return (latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        """Diffusion-model latent -> VAE latent."""
        return latent / self.scale_factor + self.shift_factor


SDXL = LatentFormat(
    "sdxl",
    channels=4,
    scale_factor=0.13025,
    rgb_factors=(
        (0.3651, 0.4232, 0.4341),
        (-0.2533, -0.0042, 0.1068),
        (0.1076, 0.1111, -0.0362),
        (-0.3165, -0.2492, -0.2188),
    ),
    rgb_bias=(0.1084, -0.0175, -0.0011),
)
"""AuraFlow uses the SDXL VAE."""

FLUX = LatentFormat(
    "flux",
    channels=16,
    scale_factor=0.3611,
    shift_factor=0.1159,
    rgb_factors=(
        (-0.0346, 0.0244, 0.0681),
        (0.0034, 0.0210, 0.0687),
        (0.0275, -0.0668, -0.0433),
        (-0.0174, 0.0160, 0.0617),
        (0.0859, 0.0721, 0.0329),
        (0.0004, 0.0383, 0.0115),
        (0.0405, 0.0861, 0.0915),
        (-0.0236, -0.0185, -0.0259),
        (-0.0245, 0.0250, 0.1180),
        (0.1008, 0.0755, -0.0421),
        (-0.0515, 0.0201, 0.0011),
        (0.0428, -0.0012, -0.0036),
        (0.0817, 0.0765, 0.0749),
        (-0.1264, -0.0522, -0.1103),
        (-0.0280, -0.0881, -0.0499),
        (-0.1262, -0.0982, -0.0778),
    ),
    rgb_bias=(-0.0329, -0.0718, -0.0851),
)
