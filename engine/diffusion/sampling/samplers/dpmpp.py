"""DPM-Solver++ samplers (Lu et al. 2022): exponential integrators on the clean-latent prediction.

The multistep SDE variants and dpmpp_sde draw their noise from a Brownian tree (see noise.py); the
`_gpu` twins are the same samplers with the tree on x's device instead of the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from engine.diffusion.sampling.noise import BrownianTreeNoiseSampler, NoiseSampler
from engine.diffusion.sampling.samplers.common import (
    Denoiser,
    StepCallback,
    ancestral_step,
    flow_ancestral_step,
    report,
    seed_of,
    snr_safe,
    step_noise,
    to_d,
)
from engine.diffusion.sampling.samplers.registry import register


def _brownian_noise(
    x: torch.Tensor, sigmas: torch.Tensor, extra_args: dict[str, Any] | None, on_cpu: bool
) -> BrownianTreeNoiseSampler:
    """A tree spanning the run's sigmas, seeded with the run's seed."""
    sigma_min, sigma_max = sigmas[sigmas > 0].min(), sigmas.max()
    return BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed_of(extra_args), on_cpu=on_cpu)


def _flow_midpoint_sigma(sigma: torch.Tensor, sigma_down: torch.Tensor) -> torch.Tensor:
    """The sigma halfway, in half-log-SNR, from sigma to sigma_down (0.9999 when starting at sigma 1)."""
    if sigma == 1.0:
        return sigma.new_tensor(0.9999)
    lambda_from, lambda_down = ((1 - sigma) / sigma).log(), ((1 - sigma_down) / sigma_down).log()
    return (lambda_from + (lambda_down - lambda_from) / 2).exp().add(1).reciprocal()


@register("dpmpp_2s_ancestral")
def sample_dpmpp_2s_ancestral(
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
    """DPM-Solver++(2S) to below the next sigma through a half-log-SNR midpoint, then noise back up."""
    noise = step_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, rescale, renoise = flow_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            sigma_s = _flow_midpoint_sigma(sigmas[i], sigma_down)
            ratio_s = sigma_s / sigmas[i]
            denoised_s = model(ratio_s * x + (1 - ratio_s) * denoised, sigma_s * s_in)
            ratio_down = sigma_down / sigmas[i]
            x = ratio_down * x + (1 - ratio_down) * denoised_s
        if sigmas[i + 1] > 0 and eta > 0:
            x = rescale * x + noise(sigmas[i], sigmas[i + 1]) * s_noise * renoise
    return x


def _ancestral_exponential_step(
    x: torch.Tensor,
    x0: torch.Tensor,
    lambda_s: torch.Tensor,
    lambda_to: torch.Tensor,
    alpha_s: torch.Tensor,
    alpha_to: torch.Tensor,
    eta: float,
) -> tuple[torch.Tensor, Any]:
    """(x, noise std): DPM-Solver++(1) from lambda_s towards lambda_to, stopping short where the ancestral
    split of sigma / alpha = e^-lambda (`ancestral_step`) leaves room for that much noise (times alpha_to)."""
    sigma_down, sigma_up = ancestral_step(lambda_s.neg().exp(), lambda_to.neg().exp(), eta)
    h = sigma_down.log().neg() - lambda_s
    return (alpha_to / alpha_s) * (-h).exp() * x - alpha_to * (-h).expm1() * x0, sigma_up


@register("dpmpp_sde")
def sample_dpmpp_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    r: float = 1 / 2,
    tree_on_cpu: bool = True,
) -> torch.Tensor:
    """Stochastic DPM-Solver++(2S): an ancestral first-order step a fraction r into the step evaluates x0
    there; the step then uses x0 extrapolated linearly in lambda to the middle, (1 - 1/2r) x0 + 1/2r x0_r."""
    if len(sigmas) <= 1:
        return x
    noise = noise_sampler or _brownian_noise(x, sigmas, extra_args, tree_on_cpu)
    ms = model.model_sampling
    sigmas = snr_safe(sigmas, ms)
    s_in = x.new_ones([x.shape[0]])
    weight_r = 1 / (2 * r)
    noisy = eta > 0 and s_noise > 0
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i] * s_in)
        report(callback, i, x, sigmas[i], x0)
        if sigmas[i + 1] == 0:
            x = x0
            continue
        lambda_s, lambda_t = ms.half_log_snr(sigmas[i]), ms.half_log_snr(sigmas[i + 1])
        lambda_r = lambda_s + r * (lambda_t - lambda_s)
        sigma_r = ms.sigma_at_half_log_snr(lambda_r)
        alpha_s, alpha_r = sigmas[i] * lambda_s.exp(), sigma_r * lambda_r.exp()
        alpha_t = sigmas[i + 1] * lambda_t.exp()

        x_r, up = _ancestral_exponential_step(x, x0, lambda_s, lambda_r, alpha_s, alpha_r, eta)
        if noisy:
            x_r = x_r + alpha_r * noise(sigmas[i], sigma_r) * s_noise * up
        x0_r = model(x_r, sigma_r * s_in)

        x0_mid = (1 - weight_r) * x0 + weight_r * x0_r
        x, up = _ancestral_exponential_step(x, x0_mid, lambda_s, lambda_t, alpha_s, alpha_t, eta)
        if noisy:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * up
    return x


register("dpmpp_sde_gpu")(partial(sample_dpmpp_sde, tree_on_cpu=False))


@register("dpmpp_2m")
def sample_dpmpp_2m(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M): second order from the previous step's x0, first order on the first and last steps."""
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        report(callback, i, x, sigmas[i], denoised)
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            denoised_d = denoised
        else:
            r = (t - sigmas[i - 1].log().neg()) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (t_next.neg().exp() / t.neg().exp()) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@dataclass(frozen=True)
class SdeStep:
    """One step of the DPM-Solver++ SDE family: its length h in lambda, (1 + eta) h, and alpha at its end."""

    h: torch.Tensor
    h_eta: torch.Tensor
    alpha_t: torch.Tensor


Correction = Callable[[torch.Tensor, list[torch.Tensor], list[torch.Tensor], SdeStep], torch.Tensor]
"""(x, x0s newest first, the earlier steps' h newest first, this step) -> x with the multistep terms added."""


def _multistep_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None,
    callback: StepCallback | None,
    eta: float,
    s_noise: float,
    noise_sampler: NoiseSampler | None,
    tree_on_cpu: bool,
    correction: Correction,
) -> torch.Tensor:
    """The DPM-Solver++ SDE family in half-log-SNR lambda on x0; eta is the noise strength (1: reverse SDE).

    For x0 constant over a step of h in lambda the SDE is solved exactly,
        x_t = sigma_t / sigma_s e^(-eta h) x_s + alpha_t (1 - e^(-(1 + eta) h)) x0
              + sigma_t sqrt(1 - e^(-2 eta h)) z,
    and `correction` adds the change of x0 across the step, extrapolated from the last one or two.
    """
    if len(sigmas) <= 1:
        return x
    noise = noise_sampler or _brownian_noise(x, sigmas, extra_args, tree_on_cpu)
    ms = model.model_sampling
    sigmas = snr_safe(sigmas, ms)
    s_in = x.new_ones([x.shape[0]])
    x0s: list[torch.Tensor] = []
    earlier_hs: list[torch.Tensor] = []
    h = None
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i] * s_in)
        report(callback, i, x, sigmas[i], x0)
        x0s = [x0, *x0s][:3]
        if sigmas[i + 1] == 0:
            x = x0
        else:
            lambda_s, lambda_t = ms.half_log_snr(sigmas[i]), ms.half_log_snr(sigmas[i + 1])
            h = lambda_t - lambda_s
            step = SdeStep(h, h * (eta + 1), sigmas[i + 1] * lambda_t.exp())
            decay = sigmas[i + 1] / sigmas[i] * (-h * eta).exp()
            x = decay * x + step.alpha_t * (-step.h_eta).expm1().neg() * x0
            x = correction(x, x0s, earlier_hs, step)
            if eta > 0 and s_noise > 0:
                z = noise(sigmas[i], sigmas[i + 1])
                x = x + z * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        if h is not None:
            earlier_hs = [h, *earlier_hs][:2]
    return x


def _midpoint(
    x: torch.Tensor, x0s: list[torch.Tensor], earlier_hs: list[torch.Tensor], step: SdeStep
) -> torch.Tensor:
    """2M, midpoint rule: x0's change over the last step (per unit h), times half the first-order weight."""
    if len(x0s) < 2:
        return x
    r = earlier_hs[0] / step.h
    return x + 0.5 * step.alpha_t * (-step.h_eta).expm1().neg() * (1 / r) * (x0s[0] - x0s[1])


def _heun(
    x: torch.Tensor, x0s: list[torch.Tensor], earlier_hs: list[torch.Tensor], step: SdeStep
) -> torch.Tensor:
    """2M, Heun (trapezoid) rule: x0's change over the last step (per unit h), times the exact h phi_2."""
    if len(x0s) < 2:
        return x
    r = earlier_hs[0] / step.h
    return x + step.alpha_t * ((-step.h_eta).expm1().neg() / (-step.h_eta) + 1) * (1 / r) * (x0s[0] - x0s[1])


def _third_order(
    x: torch.Tensor, x0s: list[torch.Tensor], earlier_hs: list[torch.Tensor], step: SdeStep
) -> torch.Tensor:
    """3M: first and second divided differences of x0 over the last two steps, weighted by h phi_2 and
    h phi_3; with a single earlier step, the Heun term."""
    phi_2 = step.h_eta.neg().expm1() / step.h_eta + 1
    if len(x0s) == 3:
        r0, r1 = earlier_hs[0] / step.h, earlier_hs[1] / step.h
        d1_0 = (x0s[0] - x0s[1]) / r0
        d1_1 = (x0s[1] - x0s[2]) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_3 = phi_2 / step.h_eta - 0.5
        return x + (step.alpha_t * phi_2) * d1 - (step.alpha_t * phi_3) * d2
    if len(x0s) == 2:
        return x + (step.alpha_t * phi_2) * ((x0s[0] - x0s[1]) / (earlier_hs[0] / step.h))
    return x


@register("dpmpp_2m_sde")
def sample_dpmpp_2m_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    solver_type: str = "midpoint",
    tree_on_cpu: bool = True,
) -> torch.Tensor:
    """DPM-Solver++(2M) SDE: the exact SDE step for a constant x0, plus a midpoint or Heun correction."""
    corrections = {"midpoint": _midpoint, "heun": _heun}
    if solver_type not in corrections:
        raise ValueError(f"dpmpp_2m_sde: solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    correction = corrections[solver_type]
    return _multistep_sde(
        model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, tree_on_cpu, correction
    )


register("dpmpp_2m_sde_gpu")(partial(sample_dpmpp_2m_sde, tree_on_cpu=False))
register("dpmpp_2m_sde_heun")(partial(sample_dpmpp_2m_sde, solver_type="heun"))
register("dpmpp_2m_sde_heun_gpu")(partial(sample_dpmpp_2m_sde, solver_type="heun", tree_on_cpu=False))


@register("dpmpp_3m_sde")
def sample_dpmpp_3m_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    tree_on_cpu: bool = True,
) -> torch.Tensor:
    """DPM-Solver++(3M) SDE: third order from the two previous x0 (second order on the second step)."""
    return _multistep_sde(
        model, x, sigmas, extra_args, callback, eta, s_noise, noise_sampler, tree_on_cpu, _third_order
    )


register("dpmpp_3m_sde_gpu")(partial(sample_dpmpp_3m_sde, tree_on_cpu=False))
