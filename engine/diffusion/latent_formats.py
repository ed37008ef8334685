"""How each VAE's latent space is scaled before the diffusion model sees it."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LatentFormat:
    name: str
    channels: int
    scale_factor: float
    shift_factor: float = 0.0

    def process_in(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latent -> diffusion-model latent."""
        return (latent - self.shift_factor) * self.scale_factor

    def process_out(self, latent: torch.Tensor) -> torch.Tensor:
        """Diffusion-model latent -> VAE latent."""
        return latent / self.scale_factor + self.shift_factor


SDXL = LatentFormat("sdxl", channels=4, scale_factor=0.13025)
"""AuraFlow uses the SDXL VAE."""

FLUX = LatentFormat("flux", channels=16, scale_factor=0.3611, shift_factor=0.1159)
