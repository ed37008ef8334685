"""Differential diffusion: a soft inpainting mask read as "how many steps may change this cell".

At each step the mask becomes binary: a cell is denoised when its mask value is at least the
step's threshold, the run's progress in model time (1 at the first sigma, 0 at the last nonzero
one or the model's smallest, whichever is larger). So a cell at 0.3 is kept until the last 30% of
the run and regenerated from there; cells at 1 change throughout, cells at 0 never. Below full
strength the binary mask is blended back toward the soft one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.diffusion.sampling.model_sampling import FlowModelSampling


def step_threshold(
    sigma: torch.Tensor, model_sampling: FlowModelSampling, sigmas: torch.Tensor
) -> torch.Tensor:
    """The mask value a cell needs to be denoised at `sigma` ([B]; the batch's first sigma is used)."""
    sigma_to = torch.maximum(sigmas[-1], model_sampling.sigma_min.to(sigmas))
    ts_from = model_sampling.timestep(sigmas[0])
    ts_to = model_sampling.timestep(sigma_to)
    current = model_sampling.timestep(sigma.reshape(-1)[0])
    return (current - ts_to) / (ts_from - ts_to)


@dataclass(frozen=True)
class DifferentialMask:
    """The DenoiseMaskFunction a DifferentialDiffusion MODEL carries."""

    strength: float = 1.0

    def __call__(
        self, sigma: torch.Tensor, mask: torch.Tensor, model_sampling: FlowModelSampling, sigmas: torch.Tensor
    ) -> torch.Tensor:
        binary = (mask >= step_threshold(sigma, model_sampling, sigmas)).to(mask.dtype)
        if 0 < self.strength < 1:
            return self.strength * binary + (1 - self.strength) * mask
        return binary
