"""Linear multistep samplers: one model evaluation per step, higher order from the previous steps.

lms, ipndm and ipndm_v extrapolate the ODE derivative in sigma (Adams-Bashforth style); deis does so
in the time variable of a variance-preserving process; res_multistep works in log sigma on x0;
gradient_estimation corrects Euler with the change in the derivative.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.polynomial import polynomial as P

from engine.diffusion.sampling.noise import NoiseSampler
from engine.diffusion.sampling.samplers.cfg_pp import unguided
from engine.diffusion.sampling.samplers.common import (
    Denoiser,
    StepCallback,
    ancestral_step,
    report,
    step_noise,
    to_d,
)
from engine.diffusion.sampling.samplers.deis import deis_coefficients
from engine.diffusion.sampling.samplers.registry import register


def lagrange_integral(nodes: np.ndarray, j: int, start: float, end: float) -> float:
    """The integral from start to end of the Lagrange basis polynomial that is 1 at nodes[j], 0 at others."""
    others = np.delete(nodes, j)
    if len(others) == 0:
        return end - start
    antiderivative = P.polyint(P.polyfromroots(others)) / np.prod(nodes[j] - others)
    return float(P.polyval(end, antiderivative) - P.polyval(start, antiderivative))


@register("lms")
def sample_lms(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    order: int = 4,
) -> torch.Tensor:
    """Linear multistep in sigma: integrate the polynomial through the last `order` derivatives."""
    s_in = x.new_ones([x.shape[0]])
    sigmas_cpu = sigmas.detach().cpu().double().numpy()
    derivatives: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        derivatives = [*derivatives, to_d(x, sigmas[i], denoised)][-order:]
        report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        nodes = sigmas_cpu[i + 1 - len(derivatives) : i + 1][::-1]
        coefficients = [
            lagrange_integral(nodes, j, sigmas_cpu[i], sigmas_cpu[i + 1]) for j in range(len(derivatives))
        ]
        x = x + sum(c * d for c, d in zip(coefficients, reversed(derivatives), strict=True))
    return x


@register("ipndm")
def sample_ipndm(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    max_order: int = 4,
) -> torch.Tensor:
    """Improved PNDM: fixed Adams-Bashforth weights on the last four derivatives (zju-pi/diff-sampler)."""
    s_in = x.new_ones([x.shape[0]])
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in)
        report(callback, i, x, sigma, denoised)
        d = (x - denoised) / sigma
        order = min(max_order, i + 1)
        if sigma_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (sigma_next - sigma) * d
        elif order == 2:
            x_next = x + (sigma_next - sigma) * (3 * d - history[-1]) / 2
        elif order == 3:
            x_next = x + (sigma_next - sigma) * (23 * d - 16 * history[-1] + 5 * history[-2]) / 12
        else:
            x_next = (
                x
                + (sigma_next - sigma) * (55 * d - 59 * history[-1] + 37 * history[-2] - 9 * history[-3]) / 24
            )
        history = [*history, d][-(max_order - 1) :]
        x = x_next
    return x


def _ipndm_v_weights(h: list[torch.Tensor], order: int) -> list[torch.Tensor]:
    """Variable-step Adams-Bashforth weights of the current and earlier derivatives (h[k]: k-th last step)."""
    h_n = h[0]
    if order == 2:
        return [(2 + h_n / h[1]) / 2, -(h_n / h[1]) / 2]
    h_n_1, h_n_2 = h[1], h[2]
    temp1 = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3:
        return [
            (2 + (h_n / h_n_1)) / 2 + temp1,
            -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1,
            temp1 * h_n_1 / h_n_2,
        ]
    h_n_3 = h[3]
    ratio = h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))
    temp2 = (
        (1 - h_n / (3 * (h_n + h_n_1))) / 2
        + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2))
    ) * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2) / (h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3)))
    return [
        (2 + (h_n / h_n_1)) / 2 + temp1 + temp2,
        -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + (h_n_1 / h_n_2) + ratio) * temp2,
        temp1 * h_n_1 / h_n_2 + ((h_n_1 / h_n_2) + ratio * (1 + h_n_2 / h_n_3)) * temp2,
        -temp2 * ratio * h_n_1 / h_n_2,
    ]


@register("ipndm_v")
def sample_ipndm_v(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    max_order: int = 4,
) -> torch.Tensor:
    """iPNDM with weights for the actual, uneven step sizes."""
    s_in = x.new_ones([x.shape[0]])
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in)
        report(callback, i, x, sigma, denoised)
        d = (x - denoised) / sigma
        order = min(max_order, i + 1)
        if sigma_next == 0:
            x_next = denoised
        elif order == 1:
            x_next = x + (sigma_next - sigma) * d
        else:
            steps = [sigmas[i + 1 - k] - sigmas[i - k] for k in range(order)]
            weights = _ipndm_v_weights(steps, order)
            derivatives = [d, *reversed(history[-(order - 1) :])]
            x_next = x + (sigma_next - sigma) * sum(w * g for w, g in zip(weights, derivatives, strict=True))
        history = [*history, d][-(max_order - 1) :]
        x = x_next
    return x


@register("deis")
def sample_deis(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    max_order: int = 3,
) -> torch.Tensor:
    """DEIS (Zhang & Chen 2022), tabulated form: multistep weights integrated in a VP process's time."""
    s_in = x.new_ones([x.shape[0]])
    coefficients = deis_coefficients(sigmas, max_order)
    history: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        denoised = model(x, sigma * s_in)
        report(callback, i, x, sigma, denoised)
        d = (x - denoised) / sigma
        order = 1 if sigma_next <= 0 else min(max_order, i + 1)
        if order == 1:
            x_next = x + (sigma_next - sigma) * d
        else:
            derivatives = [d, *reversed(history[-(order - 1) :])]
            x_next = x + sum(c * g for c, g in zip(coefficients[i], derivatives, strict=True))
        history = [*history, d][-(max_order - 1) :]
        x = x_next
    return x


def _res_multistep(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None,
    callback: StepCallback | None,
    s_noise: float,
    noise_sampler: NoiseSampler | None,
    eta: float,
    cfg_pp: bool,
) -> torch.Tensor:
    """The second-order multistep RES method (arXiv 2308.02157) in log sigma, optionally ancestral and CFG++.

    Its ancestral split is the variance-exploding one, as in ComfyUI, also for flow models.
    """
    noise = step_noise(x, extra_args, noise_sampler) if eta > 0 else None
    s_in = x.new_ones([x.shape[0]])

    def phi_1(t: torch.Tensor) -> torch.Tensor:
        return torch.expm1(t) / t

    def phi_2(t: torch.Tensor) -> torch.Tensor:
        return (phi_1(t) - 1.0) / t

    old_sigma_down = old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        uncond = unguided(model) if cfg_pp else denoised
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(callback, i, x, sigmas[i], denoised)
        if sigma_down == 0 or old_denoised is None:
            d = to_d(x, sigmas[i], uncond)
            x = denoised + d * sigma_down if cfg_pp else x + d * (sigma_down - sigmas[i])
        else:
            t, t_old = sigmas[i].log().neg(), old_sigma_down.log().neg()
            t_next, t_prev = sigma_down.log().neg(), sigmas[i - 1].log().neg()
            h = t_next - t
            c2 = (t_prev - t_old) / h
            b1 = torch.nan_to_num(phi_1(-h) - phi_2(-h) / c2, nan=0.0)
            b2 = torch.nan_to_num(phi_2(-h) / c2, nan=0.0)
            if cfg_pp:
                x = x + (denoised - uncond)
            x = torch.exp(-h) * x + h * (b1 * uncond + b2 * old_denoised)
        if noise is not None and sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        old_denoised = uncond
        old_sigma_down = sigma_down
    return x


@register("res_multistep")
def sample_res_multistep(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    return _res_multistep(
        model, x, sigmas, extra_args, callback, s_noise, noise_sampler, eta=0.0, cfg_pp=False
    )


@register("res_multistep_cfg_pp", needs_uncond=True)
def sample_res_multistep_cfg_pp(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    return _res_multistep(
        model, x, sigmas, extra_args, callback, s_noise, noise_sampler, eta=0.0, cfg_pp=True
    )


@register("res_multistep_ancestral")
def sample_res_multistep_ancestral(
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
    return _res_multistep(
        model, x, sigmas, extra_args, callback, s_noise, noise_sampler, eta=eta, cfg_pp=False
    )


@register("res_multistep_ancestral_cfg_pp", needs_uncond=True)
def sample_res_multistep_ancestral_cfg_pp(
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
    return _res_multistep(
        model, x, sigmas, extra_args, callback, s_noise, noise_sampler, eta=eta, cfg_pp=True
    )


def _gradient_estimation(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    callback: StepCallback | None,
    ge_gamma: float,
    cfg_pp: bool,
) -> torch.Tensor:
    """Euler plus (gamma - 1) times the derivative's change since the last step (openreview o2ND9v0CeK)."""
    s_in = x.new_ones([x.shape[0]])
    old_d = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        d = to_d(x, sigmas[i], unguided(model) if cfg_pp else denoised)
        report(callback, i, x, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            x = denoised + d * sigmas[i + 1] if cfg_pp else x + d * dt
            if old_d is not None:
                x = x + (ge_gamma - 1) * (d - old_d) * dt
        old_d = d
    return x


@register("gradient_estimation")
def sample_gradient_estimation(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    ge_gamma: float = 2.0,
) -> torch.Tensor:
    return _gradient_estimation(model, x, sigmas, callback, ge_gamma, cfg_pp=False)


@register("gradient_estimation_cfg_pp", needs_uncond=True)
def sample_gradient_estimation_cfg_pp(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    ge_gamma: float = 2.0,
) -> torch.Tensor:
    return _gradient_estimation(model, x, sigmas, callback, ge_gamma, cfg_pp=True)
