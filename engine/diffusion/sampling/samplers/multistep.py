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
    """The weights of the derivatives d_n, d_(n-1), ... in iPNDM's step x + h * sum(w_k d_(n-k)).

    h[k] is the k-th last step (h[0] = h the current one). In Newton's backward form the weights are
    variable-step Adams-Bashforth 2's plus multiples of a second and a third difference of the
    derivatives:

        w = [1 + r/2, -r/2] + c2 [1, -(1 + q1), q1] + c3 [1, -(1 + q1 + p), q1 + p (1 + q2), -p q1]

    with r = h / h1, q1 = h1 / h2, q2 = h2 / h3 and p = h1 (h1 + h2) / (h2 (h2 + h3)), and the
    coefficients iPNDM_v (zju-pi/diff-sampler, after the iPNDM of Zhang & Chen 2022,
    arXiv 2204.13902) actually evaluates, as ComfyUI does:

        c2 = 1/2 - h^2 / (6 h1 (h1 + h2))
        c3 = (1/2 - h / (6 (h + h1)) + (1 - h / (2 (h + h1))) h / (6 (h + h1 + h2)))
             * h (h + h1) (h + h1 + h2) / (h1 (h1 + h2) (h1 + h2 + h3))

    c2 is not Adams-Bashforth 3's h (2h + 3 h1) / (6 h1 (h1 + h2)), which its source spells with
    `(1 - h / (3 (h + h1)))` meant as a factor but parsed as a term; the two agree for equal steps,
    where order 3 is AB3 (23, -16, 5) / 12. Order 4 is not AB4 even for equal steps: c3 is 11/24, not
    9/24, giving (57, -65, 43, -11) / 24, still third order there; and -p q1 should be -p q2 for the
    weights to sum to 1 on uneven steps. Both are kept: ComfyUI's images are the reference.
    """
    r = h[0] / h[1]
    weights = [(2 + r) / 2, -r / 2]
    if order == 2:
        return weights
    h0, h1, h2 = h[0], h[1], h[2]
    q1 = h1 / h2
    # As parsed: 1 - (h0 / (3 (h0 + h1))) * (h0 (h0 + h1)) / (h1 (h1 + h2)), halved.
    c2 = (1 - h0 / (3 * (h0 + h1)) * (h0 * (h0 + h1)) / (h1 * (h1 + h2))) / 2
    second = [c2, -(1 + q1) * c2, c2 * h1 / h2]
    if order == 3:
        return _add_terms(weights, second)
    h3 = h[3]
    p = h1 * (h1 + h2) / (h2 * (h2 + h3))
    c3 = ((1 - h0 / (3 * (h0 + h1))) / 2 + (1 - h0 / (2 * (h0 + h1))) * h0 / (6 * (h0 + h1 + h2))) * (
        h0 * (h0 + h1) * (h0 + h1 + h2) / (h1 * (h1 + h2) * (h1 + h2 + h3))
    )
    third = [c3, -(1 + q1 + p) * c3, (q1 + p * (1 + h2 / h3)) * c3, -c3 * p * h1 / h2]
    return _add_terms(_add_terms(weights, second), third)


def _add_terms(weights: list[torch.Tensor], term: list[torch.Tensor]) -> list[torch.Tensor]:
    """weights + term, the shorter list padded with zeros (the term reaches one derivative further back)."""
    return [*(w + t for w, t in zip(weights, term, strict=False)), *term[len(weights) :]]


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
    """iPNDM on uneven steps: x_next = x + (sigma_next - sigma) sum(w_k d_(n-k)), w from `_ipndm_v_weights`,
    at order min(max_order, steps so far + 1); the step into sigma 0 returns x0."""
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


def _phi_1(z: torch.Tensor) -> torch.Tensor:
    """phi_1(z) = (e^z - 1) / z."""
    return torch.expm1(z) / z


def _phi_2(z: torch.Tensor) -> torch.Tensor:
    """phi_2(z) = (phi_1(z) - 1) / z."""
    return (_phi_1(z) - 1.0) / z


def _res_first_order(
    x: torch.Tensor,
    sigma: torch.Tensor,
    sigma_down: Any,
    x0: torch.Tensor,
    x0_stepped: torch.Tensor,
    cfg_pp: bool,
) -> torch.Tensor:
    """Euler in sigma to sigma_down along d = (x - x0_stepped) / sigma; with CFG++, a DDIM step that
    lands on the guided x0 and keeps the unguided noise estimate: x0 + sigma_down * d."""
    d = to_d(x, sigma, x0_stepped)
    return x0 + d * sigma_down if cfg_pp else x + d * (sigma_down - sigma)


def _res_second_order(
    x: torch.Tensor,
    sigmas: torch.Tensor,
    i: int,
    sigma_down: torch.Tensor,
    previous_sigma_down: torch.Tensor,
    x0_stepped: torch.Tensor,
    previous_x0: torch.Tensor,
) -> torch.Tensor:
    """The RES two-stage multistep step (Zhang et al. 2023, arXiv 2308.02157) in t = -log sigma.

    There dx/dt = x0 - x, so over h = t(sigma_down) - t(sigma_i)
        x_next = e^-h x + int_0^h e^-(h - s) x0(t + s) ds,
    and with x0 linear in t through this step's x0 and the previous one, placed c2 h away,
        x_next = e^-h x + h (b1 x0 + b2 x0_previous),  b1 = phi_1(-h) - phi_2(-h) / c2,  b2 = phi_2(-h) / c2.
    As in ComfyUI, c2 h is minus the previous step's deterministic part, sigma_(i-1) to its sigma_down
    (all of it, when not ancestral); b1 and b2 are 0 where they come out NaN.
    """
    t, t_next = sigmas[i].log().neg(), sigma_down.log().neg()
    t_previous, t_previous_down = sigmas[i - 1].log().neg(), previous_sigma_down.log().neg()
    h = t_next - t
    c2 = (t_previous - t_previous_down) / h
    b1 = torch.nan_to_num(_phi_1(-h) - _phi_2(-h) / c2, nan=0.0)
    b2 = torch.nan_to_num(_phi_2(-h) / c2, nan=0.0)
    return torch.exp(-h) * x + h * (b1 * x0_stepped + b2 * previous_x0)


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
    """RES multistep to each step's sigma_down, then noise sigma_up (eta > 0); first order on the first
    step and into sigma 0.

    The step integrates x0, or with cfg_pp (CFG++, Chung et al. 2024, arXiv 2406.08070) the unguided
    x0 from x shifted by the guidance, x + (x0 - x0_unguided). Its ancestral split is the
    variance-exploding one, as in ComfyUI, also for flow models.
    """
    noise = step_noise(x, extra_args, noise_sampler) if eta > 0 else None
    s_in = x.new_ones([x.shape[0]])
    previous: tuple[torch.Tensor, torch.Tensor] | None = None  # the last step's (sigma_down, stepped x0)
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i] * s_in)
        x0_stepped = unguided(model) if cfg_pp else x0
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(callback, i, x, sigmas[i], x0)
        if sigma_down == 0 or previous is None:
            x = _res_first_order(x, sigmas[i], sigma_down, x0, x0_stepped, cfg_pp)
        else:
            if cfg_pp:
                x = x + (x0 - x0_stepped)
            previous_sigma_down, previous_x0 = previous
            x = _res_second_order(x, sigmas, i, sigma_down, previous_sigma_down, x0_stepped, previous_x0)
        if noise is not None and sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
        previous = (sigma_down, x0_stepped)
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
