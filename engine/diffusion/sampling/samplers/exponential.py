"""Stochastic exponential integrators in half-log-SNR on x0: SEEDS-2/3 and exponential Heun.

Each step solves the linear part of the reverse SDE (or ODE, at eta 0) exactly and approximates
only the change of x0 across the step. Per-step noise comes from the run's seeded generator; the
order of the draws is part of the result, so a draw whose weight is zero is still taken.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.diffusion.sampling.noise import NoiseSampler
from engine.diffusion.sampling.samplers.common import (
    Denoiser,
    StepCallback,
    h_phi_1,
    h_phi_2,
    report,
    snr_safe,
    step_noise,
)
from engine.diffusion.sampling.samplers.registry import register


def _seeds_2(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None,
    callback: StepCallback | None,
    eta: float,
    s_noise: float,
    noise_sampler: NoiseSampler | None,
    r: float,
    solver_type: str,
) -> torch.Tensor:
    """SEEDS-2 (arXiv 2305.14267): one intermediate evaluation a fraction r into each step."""
    if solver_type not in {"phi_1", "phi_2"}:
        raise ValueError("solver_type must be 'phi_1' or 'phi_2'")
    noise = step_noise(x, extra_args, noise_sampler)
    ms = model.model_sampling
    inject_noise = eta > 0 and s_noise > 0
    sigmas = snr_safe(sigmas, ms)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = ms.half_log_snr(sigmas[i]), ms.half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s1 = torch.lerp(lambda_s, lambda_t, r)
        sigma_s1 = ms.sigma_at_half_log_snr(lambda_s1)
        alpha_s1 = sigma_s1 * lambda_s1.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        x_2 = sigma_s1 / sigmas[i] * (-r * h * eta).exp() * x - alpha_s1 * h_phi_1(-r * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_s1)
            x_2 = x_2 + sde_noise * sigma_s1 * s_noise
        denoised_2 = model(x_2, sigma_s1 * s_in)

        if solver_type == "phi_1":
            denoised_d = torch.lerp(denoised, denoised_2, 1 / (2 * r))
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * h_phi_1(-h_eta) * denoised_d
        else:
            b2 = h_phi_2(-h_eta) / r
            b1 = h_phi_1(-h_eta) - b2
            x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b2 * denoised_2)
        if inject_noise:
            segment = (r - 1) * h * eta
            sde_noise = sde_noise * segment.exp()
            sde_noise = sde_noise + segment.mul(2).expm1().neg().sqrt() * noise(sigma_s1, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x


@register("seeds_2")
def sample_seeds_2(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    r: float = 0.5,
    solver_type: str = "phi_1",
) -> torch.Tensor:
    return _seeds_2(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, r, solver_type)


@register("exp_heun_2_x0")
def sample_exp_heun_2_x0(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    solver_type: str = "phi_2",
) -> torch.Tensor:
    """Deterministic exponential Heun: SEEDS-2 with its second evaluation at the end of the step, no noise."""
    return _seeds_2(model, x, sigmas, extra_args, callback, 0.0, 0.0, None, 1.0, solver_type)


@register("exp_heun_2_x0_sde")
def sample_exp_heun_2_x0_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    solver_type: str = "phi_2",
) -> torch.Tensor:
    """Stochastic exponential Heun: SEEDS-2 with its second evaluation at the end of the step."""
    return _seeds_2(model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, 1.0, solver_type)


@register("seeds_3")
def sample_seeds_3(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    r_1: float = 1.0 / 3,
    r_2: float = 2.0 / 3,
) -> torch.Tensor:
    """SEEDS-3: two intermediate evaluations, at fractions r_1 and r_2 of each step."""
    noise = step_noise(x, extra_args, noise_sampler)
    ms = model.model_sampling
    inject_noise = eta > 0 and s_noise > 0
    sigmas = snr_safe(sigmas, ms)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        lambda_s, lambda_t = ms.half_log_snr(sigmas[i]), ms.half_log_snr(sigmas[i + 1])
        h = lambda_t - lambda_s
        h_eta = h * (eta + 1)
        lambda_s1, lambda_s2 = torch.lerp(lambda_s, lambda_t, r_1), torch.lerp(lambda_s, lambda_t, r_2)
        sigma_s1, sigma_s2 = ms.sigma_at_half_log_snr(lambda_s1), ms.sigma_at_half_log_snr(lambda_s2)
        alpha_s1 = sigma_s1 * lambda_s1.exp()
        alpha_s2 = sigma_s2 * lambda_s2.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        x_2 = sigma_s1 / sigmas[i] * (-r_1 * h * eta).exp() * x - alpha_s1 * h_phi_1(-r_1 * h_eta) * denoised
        if inject_noise:
            sde_noise = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise(sigmas[i], sigma_s1)
            x_2 = x_2 + sde_noise * sigma_s1 * s_noise
        denoised_2 = model(x_2, sigma_s1 * s_in)

        a3_2 = r_2 / r_1 * h_phi_2(-r_2 * h_eta)
        a3_1 = h_phi_1(-r_2 * h_eta) - a3_2
        x_3 = sigma_s2 / sigmas[i] * (-r_2 * h * eta).exp() * x - alpha_s2 * (
            a3_1 * denoised + a3_2 * denoised_2
        )
        if inject_noise:
            segment = (r_1 - r_2) * h * eta
            sde_noise = sde_noise * segment.exp()
            sde_noise = sde_noise + segment.mul(2).expm1().neg().sqrt() * noise(sigma_s1, sigma_s2)
            x_3 = x_3 + sde_noise * sigma_s2 * s_noise
        denoised_3 = model(x_3, sigma_s2 * s_in)

        b3 = h_phi_2(-h_eta) / r_2
        b1 = h_phi_1(-h_eta) - b3
        x = sigmas[i + 1] / sigmas[i] * (-h * eta).exp() * x - alpha_t * (b1 * denoised + b3 * denoised_3)
        if inject_noise:
            segment = (r_2 - 1) * h * eta
            sde_noise = sde_noise * segment.exp()
            sde_noise = sde_noise + segment.mul(2).expm1().neg().sqrt() * noise(sigma_s2, sigmas[i + 1])
            x = x + sde_noise * sigmas[i + 1] * s_noise
    return x
