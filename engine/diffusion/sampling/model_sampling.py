"""Flow-matching sigma tables and the sigma <-> timestep maps of AuraFlow and Flux (COMFY.md §8).

A flow model predicts a velocity v; its clean-image estimate is x0 = x - v * sigma, and a clean
latent is noised as sigma * noise + (1 - sigma) * latent. The classes differ only in how the
1000-entry sigma table is spaced: a constant shift (AuraFlow, Flux schnell) or Flux dev's
resolution-dependent exponential shift.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch

TABLE_SIZE = 1000


def time_shift(shift: float, t: torch.Tensor | float) -> torch.Tensor | float:
    """shift(a, t) = a t / (1 + (a - 1) t): the discrete-flow shift."""
    return shift * t / (1 + (shift - 1) * t)


def flux_time_shift(mu: float, t: torch.Tensor | float) -> torch.Tensor | float:
    """sigma(t) = e^mu / (e^mu + (1/t - 1)): Flux dev's shift."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


class FlowModelSampling(ABC):
    """The sigma table and noise arithmetic every flow sampler and scheduler relies on."""

    multiplier: float = 1.0

    def __init__(self) -> None:
        steps = torch.arange(1, TABLE_SIZE + 1, dtype=torch.float64) / TABLE_SIZE
        self.sigmas = self.sigma(steps * self.multiplier).to(torch.float32)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    @abstractmethod
    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """Timestep (0..multiplier) -> sigma (0..1)."""

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Sigma -> the timestep the model is conditioned on."""
        return sigma * self.multiplier

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * self.multiplier, dtype=torch.float64)))

    @staticmethod
    def calculate_denoised(sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(sigma.shape[:1] + (1,) * (model_output.ndim - 1))
        return model_input - model_output * sigma

    @staticmethod
    def noise_scaling(sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(sigma.shape[:1] + (1,) * (noise.ndim - 1))
        return sigma * noise + (1.0 - sigma) * latent_image

    @staticmethod
    def inverse_noise_scaling(sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        sigma = sigma.reshape(sigma.shape[:1] + (1,) * (latent.ndim - 1))
        return latent / (1.0 - sigma)


class DiscreteFlow(FlowModelSampling):
    """Constant shift: AuraFlow (1.73 via ModelSamplingAuraFlow), Flux schnell (1.0), SD3."""

    def __init__(self, shift: float = 1.0, multiplier: float = 1.0) -> None:
        self.shift = shift
        self.multiplier = multiplier
        super().__init__()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return time_shift(self.shift, timestep / self.multiplier)


class FluxFlow(FlowModelSampling):
    """Flux dev: exponential shift mu (1.15 by default; ModelSamplingFlux derives it from the image size)."""

    def __init__(self, mu: float = 1.15) -> None:
        self.mu = mu
        super().__init__()

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        return flux_time_shift(self.mu, timestep)
