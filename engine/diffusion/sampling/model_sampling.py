"""Flow-matching sigma tables and the sigma <-> timestep maps of AuraFlow and Flux (COMFY.md §8).

A flow model predicts a velocity v; its clean-image estimate is x0 = x - v * sigma, and a clean
latent is noised as sigma * noise + (1 - sigma) * latent. The classes differ only in how the
sigma table is spaced: a constant shift (AuraFlow, Flux schnell, SD3) or Flux dev's
resolution-dependent exponential shift.

The tables are computed in float32 exactly as ComfyUI computes them, because index-based
schedulers (simple, ddim_uniform, beta) copy table entries verbatim into the sigmas; a table
computed more precisely would differ from ComfyUI's in the last bit.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TypeVar

import torch

TABLE_SIZE = 1000
"""Entries in a discrete-flow table (ComfyUI's ModelSamplingDiscreteFlow)."""

FLUX_TABLE_SIZE = 10000
"""Entries in Flux dev's table (ComfyUI's ModelSamplingFlux): ten times finer than discrete flow."""

Time = TypeVar("Time", torch.Tensor, float)


def time_shift(shift: float, t: Time) -> Time:
    """shift(a, t) = a t / (1 + (a - 1) t): the discrete-flow shift; the identity at a = 1."""
    if shift == 1.0:
        return t
    return shift * t / (1 + (shift - 1) * t)


def flux_time_shift(mu: float, t: Time) -> Time:
    """sigma(t) = e^mu / (e^mu + (1/t - 1)): Flux dev's shift."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def flux_mu(width: int, height: int, max_shift: float = 1.15, base_shift: float = 0.5) -> float:
    """ModelSamplingFlux's mu: linear in the image-token count, base_shift at 256 tokens, max_shift at 4096.

    Evaluated in ComfyUI's order of operations so the float result, and so the sigma table, match it.
    """
    slope = (max_shift - base_shift) / (4096 - 256)
    intercept = base_shift - slope * 256
    return (width * height / (8 * 8 * 2 * 2)) * slope + intercept


def _per_sample(sigma: torch.Tensor, ndim: int) -> torch.Tensor:
    """Broadcast a scalar sigma as is, or a [B] sigma over the other dims of an ndim tensor."""
    if sigma.numel() == 1:
        return sigma.reshape(())
    return sigma.reshape(sigma.shape[:1] + (1,) * (ndim - 1))


class FlowModelSampling(ABC):
    """The sigma table and noise arithmetic every flow sampler and scheduler relies on."""

    multiplier: float = 1.0
    table_size: int = TABLE_SIZE

    def __init__(self) -> None:
        steps = torch.arange(1, self.table_size + 1) / self.table_size
        self.sigmas = self.sigma(steps * self.multiplier)

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    @abstractmethod
    def shift_time(self, t: Time) -> Time:
        """Normalised time (0..1] -> sigma (0..1]."""

    def sigma(self, timestep: Time) -> Time:
        """Timestep (0..multiplier] -> sigma."""
        return self.shift_time(timestep / self.multiplier)

    def timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Sigma -> the timestep the model is conditioned on."""
        return sigma * self.multiplier

    def percent_to_sigma(self, percent: float) -> float:
        """Sampling progress (0 = start, 1 = end) -> sigma, with ComfyUI's open ends (1.0 and 0.0)."""
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return self.shift_time(1.0 - percent)

    @staticmethod
    def calculate_denoised(
        sigma: torch.Tensor, model_output: torch.Tensor, model_input: torch.Tensor
    ) -> torch.Tensor:
        return model_input - model_output * _per_sample(sigma, model_output.ndim)

    @staticmethod
    def noise_scaling(sigma: torch.Tensor, noise: torch.Tensor, latent_image: torch.Tensor) -> torch.Tensor:
        sigma = _per_sample(sigma, noise.ndim)
        return sigma * noise + (1.0 - sigma) * latent_image

    @staticmethod
    def inverse_noise_scaling(sigma: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return latent / (1.0 - _per_sample(sigma, latent.ndim))

    @staticmethod
    def half_log_snr(sigma: torch.Tensor) -> torch.Tensor:
        """lambda = log(alpha / sigma), alpha = 1 - sigma: the time variable of exponential integrators."""
        return sigma.logit().neg()

    @staticmethod
    def sigma_at_half_log_snr(half_log_snr: torch.Tensor) -> torch.Tensor:
        """The inverse of `half_log_snr`: sigma = 1 / (1 + e^lambda)."""
        return half_log_snr.neg().sigmoid()


class DiscreteFlow(FlowModelSampling):
    """Constant shift: AuraFlow (1.73, ModelSamplingAuraFlow), Flux schnell (1.0), SD3 (multiplier 1000)."""

    def __init__(self, shift: float = 1.0, multiplier: float = 1.0) -> None:
        self.shift = shift
        self.multiplier = multiplier
        super().__init__()

    def shift_time(self, t: Time) -> Time:
        return time_shift(self.shift, t)


class FluxFlow(FlowModelSampling):
    """Flux dev: exponential shift mu (1.15 by default; ModelSamplingFlux derives it from the image size)."""

    table_size = FLUX_TABLE_SIZE

    def __init__(self, mu: float = 1.15) -> None:
        self.mu = mu
        super().__init__()

    def shift_time(self, t: Time) -> Time:
        return flux_time_shift(self.mu, t)
