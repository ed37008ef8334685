"""The analytic test problem: data Gaussian per element, so the ideal denoiser is closed-form.

For x0 ~ N(mu, s^2) noised as x = sigma * n + (1 - sigma) * x0, the ideal x0 prediction is
    E[x0 | x] = mu + (1 - sigma) s^2 / (sigma^2 + (1 - sigma)^2 s^2) * (x - (1 - sigma) mu),
and the probability-flow ODE from pure noise n at sigma 1 ends exactly at mu + s * n: at sigma it is
(1 - sigma) mu + sqrt(sigma^2 + (1 - sigma)^2 s^2) * n.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from engine.diffusion.latent_formats import LatentFormat
from engine.diffusion.protocols import DenoiseMaskFunction, ModelInputs
from engine.diffusion.sampling.model_sampling import FlowModelSampling

IDENTITY = LatentFormat("identity", channels=4, scale_factor=1.0)
"""A latent format that leaves latents as they are, so the analytic answer holds in VAE space too."""


@dataclass
class Forward:
    """What one apply_model call received."""

    x: torch.Tensor
    sigma: torch.Tensor
    inputs: ModelInputs


@dataclass
class GaussianFlowModel:
    """A DiffusionModel whose data is N(mu + prompt shift, std^2) per element, the shift being the
    conditioning's first token value, so positive and negative prompts predict different images."""

    mu: torch.Tensor
    std: torch.Tensor
    model_sampling: FlowModelSampling
    latent_format: LatentFormat = IDENTITY
    forwards: list[Forward] = field(default_factory=list)
    denoise_mask_function: DenoiseMaskFunction | None = None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def clone(self) -> GaussianFlowModel:
        return replace(self)

    def denoise(
        self, x: torch.Tensor, sigma: torch.Tensor, shift: torch.Tensor | float = 0.0
    ) -> torch.Tensor:
        s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        mu = self.mu + (shift.reshape(s.shape) if isinstance(shift, torch.Tensor) else shift)
        variance = self.std**2
        return mu + (1 - s) * variance / (s**2 + (1 - s) ** 2 * variance) * (x - (1 - s) * mu)

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        self.forwards.append(Forward(x.clone(), sigma.clone(), inputs))
        s = sigma.clamp(min=1e-6).reshape(-1, *([1] * (x.ndim - 1)))
        shift = inputs.context.mean(dim=(1, 2))
        return (x - self.denoise(x, sigma, shift)) / s

    def ode_solution(self, noise: torch.Tensor, sigma: float = 0.0) -> torch.Tensor:
        """Where the exact probability-flow ODE from `noise` at sigma 1 is at `sigma` (prompt shift 0)."""
        return (1 - sigma) * self.mu + (sigma**2 + (1 - sigma) ** 2 * self.std**2) ** 0.5 * noise


def prompt(shift: float, tokens: int = 4, **options: object) -> list[list[object]]:
    """A one-entry CONDITIONING whose tokens all equal `shift` (the analytic model reads their mean)."""
    return [[torch.full((1, tokens, 8), shift), dict(options)]]
