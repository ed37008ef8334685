"""Samplers that jump to an estimate and re-noise from there: DDPM's posterior step and LCM."""

from __future__ import annotations

from typing import Any

import torch

from engine.diffusion.sampling.noise import NoiseSampler
from engine.diffusion.sampling.samplers.common import Denoiser, StepCallback, report, step_noise
from engine.diffusion.sampling.samplers.registry import register


@register("ddpm")
def sample_ddpm(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Ancestral sampling from the DDPM posterior q(x_prev | x, x0).

    As in ComfyUI, the step reads sigma as a variance-exploding noise level (alpha_bar = 1 / (1 + sigma^2))
    for every model type; on a flow model that is a different, somewhat noisier process than the model's own.
    """
    noise = step_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        sigma, sigma_prev = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in)
        report(callback, i, x, sigma, denoised)
        eps = (x - denoised) / sigma
        x_vp = x / torch.sqrt(1.0 + sigma**2.0)
        alpha_cumprod = 1 / ((sigma * sigma) + 1)
        alpha_cumprod_prev = 1 / ((sigma_prev * sigma_prev) + 1)
        alpha = alpha_cumprod / alpha_cumprod_prev
        x = (1.0 / alpha).sqrt() * (x_vp - (1 - alpha) * eps / (1 - alpha_cumprod).sqrt())
        if sigma_prev > 0:
            posterior_std = ((1 - alpha) * (1.0 - alpha_cumprod_prev) / (1.0 - alpha_cumprod)).sqrt()
            x = x + posterior_std * noise(sigma, sigma_prev)
            x = x * torch.sqrt(1.0 + sigma_prev**2.0)
    return x


@register("lcm")
def sample_lcm(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Latent-consistency sampling: take the x0 estimate, re-noise it to the next sigma with fresh noise."""
    noise = step_noise(x, extra_args, noise_sampler)
    ms = model.model_sampling
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        report(callback, i, x, sigmas[i], denoised)
        x = denoised
        if sigmas[i + 1] > 0:
            x = ms.noise_scaling(sigmas[i + 1], noise(sigmas[i], sigmas[i + 1]), x)
    return x
