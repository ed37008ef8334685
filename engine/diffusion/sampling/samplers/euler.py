"""Karras-style single-step samplers in sigma: Euler, Heun, DPM-2 and their ancestral forms, Heun++.

Karras et al.'s "churn" (s_churn > 0) is not offered: it draws from the global RNG in ComfyUI, so
it cannot be reproduced from a seed, and no node of this engine sets it.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.diffusion.sampling.noise import NoiseSampler
from engine.diffusion.sampling.samplers.common import (
    Denoiser,
    StepCallback,
    flow_ancestral_step,
    report,
    step_noise,
    to_d,
)
from engine.diffusion.sampling.samplers.registry import register


@register("euler")
def sample_euler(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """Euler steps of the probability-flow ODE; for a flow model, steps along the predicted velocity."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        report(callback, i, x, sigmas[i], denoised)
        x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


# ComfyUI's "ddim" is Euler (DDIM is Euler's method in these coordinates), inpainting with fresh noise.
register("ddim", fresh_inpaint_noise=True)(sample_euler)


@register("euler_ancestral")
def sample_euler_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """Euler to below the next sigma, then fresh noise back up to it: a sample of the reverse SDE."""
    noise = step_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        sigma_down, rescale, renoise = flow_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        ratio = sigma_down / sigmas[i]
        x = ratio * x + (1 - ratio) * denoised
        if eta > 0:
            x = rescale * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


@register("heun")
def sample_heun(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """Heun's method (trapezoid in sigma); the last step, to sigma 0, is plain Euler."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        d = to_d(x, sigmas[i], denoised)
        report(callback, i, x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
            continue
        x_2 = x + d * dt
        d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * s_in))
        x = x + (d + d_2) / 2 * dt
    return x


def _heunpp_stages(sigmas: torch.Tensor, i: int) -> int:
    """Three stages, two on the step before the last, one (Euler) on the last."""
    s_end = sigmas[-1]
    if sigmas[i + 1] == s_end:
        return 1
    return 2 if sigmas[i + 2] == s_end else 3


def _heunpp_weights(sigmas: torch.Tensor, i: int, stages: int) -> list[Any]:
    """w_k = sigma_(i+k) / (n sigma_0) for the later stages k = 1 .. n-1, and w_0 = 1 - their sum."""
    later = [sigmas[i + k] / (stages * sigmas[0]) for k in range(1, stages)]
    first: Any = 1
    for weight in later:
        first = first - weight
    return [first, *later]


@register("heunpp2")
def sample_heunpp2(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """Heun++ (ComfyUI's heunpp2; no paper defines it): Heun's predictor chained over up to three sigmas.

    The stages follow Euler along the schedule, x^(k+1) = x^(k) + d_k (sigma_(i+k+1) - sigma_(i+k)),
    d_k = (x^(k) - x0(x^(k), sigma_(i+k))) / sigma_(i+k), and the step is
        x_next = x + (sigma_(i+1) - sigma_i) sum_k w_k d_k      (weights: `_heunpp_weights`),
    so the later derivatives count for a third each at the start (a half on the step before the last,
    Heun's trapezoid there) and fade with sigma towards plain Euler. The third stage evaluates the
    model at sigma_(i+2), a point of the next step, and is not reused.
    """
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        derivatives = [to_d(x, sigmas[i], denoised)]
        report(callback, i, x, sigmas[i], denoised)
        stages = _heunpp_stages(sigmas, i)
        x_k = x
        for k in range(1, stages):
            x_k = x_k + derivatives[-1] * (sigmas[i + k] - sigmas[i + k - 1])
            derivatives.append(to_d(x_k, sigmas[i + k], model(x_k, sigmas[i + k] * s_in)))
        weights = _heunpp_weights(sigmas, i, stages)
        slope = weights[0] * derivatives[0]
        for weight, d in zip(weights[1:], derivatives[1:], strict=True):
            slope = slope + weight * d
        x = x + slope * (sigmas[i + 1] - sigmas[i])
    return x


@register("dpm_2")
def sample_dpm_2(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """DPM-Solver-2 in sigma: the derivative at the geometric midpoint carries the whole step."""
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        d = to_d(x, sigmas[i], denoised)
        report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
            continue
        sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
        x_2 = x + d * (sigma_mid - sigmas[i])
        d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in))
        x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x


@register("dpm_2_ancestral")
def sample_dpm_2_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver-2 to below the next sigma, then fresh noise back up to it."""
    noise = step_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, rescale, renoise = flow_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, i, x, sigmas[i], denoised)
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
            continue
        sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
        x_2 = x + d * (sigma_mid - sigmas[i])
        d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in))
        x = x + d_2 * (sigma_down - sigmas[i])
        x = rescale * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x
