"""DPM-Solver (Lu et al. 2022, arXiv 2206.00927) on the noise prediction, in t = -log sigma.

With eps = (x - x0) / sigma the ODE is dx/dsigma = eps, and in t = -log sigma (the paper's lambda, its
alpha being 1 here) its exact solution from s to t is x_t = x_s - integral_s^t e^-u eps du (eq. 3.4):
the linear part is exact and only eps is approximated, by a Taylor expansion in t whose first k
terms give DPM-Solver-k. dpm_fast spends a fixed number of model evaluations in third-order steps;
dpm_adaptive picks its steps from the difference of two solvers of neighbouring orders. Both
integrate from the first sigma down to the last non-zero one and stop there (as in ComfyUI): their
result keeps that last, small amount of noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from engine.diffusion.sampling.noise import NoiseSampler
from engine.diffusion.sampling.samplers.common import (
    Denoiser,
    StepCallback,
    ancestral_step,
    report,
    step_noise,
)
from engine.diffusion.sampling.samplers.registry import register

_ERROR_FLOOR = 1e-8
"""Added to the error before inverting it, so an exact step (error 0) grows h by a finite factor."""
_END_TOLERANCE = 1e-5
"""dpm_adaptive stops this close to the end in t, rather than take a vanishing last step."""


def _t(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


def _sigma(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _final_sigma(sigmas: torch.Tensor) -> torch.Tensor:
    """The last non-zero sigma: t = -log sigma is infinite at 0, so these solvers stop here."""
    return sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]


def _eps(model: Denoiser, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The noise prediction at (x, t): the quantity DPM-Solver expands, smoother in t than x0 near sigma 1."""
    sigma = _sigma(t)
    return (x - model(x, sigma * x.new_ones([x.shape[0]]))) / sigma


def _exponential_euler(
    x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor
) -> torch.Tensor:
    """DPM-Solver-1 (eq. 3.7): eps held at its value at t, x_t = x_s - sigma_t (e^h - 1) eps_s."""
    return x - _sigma(t_next) * (t_next - t).expm1() * eps


def _stage(
    x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, h: torch.Tensor, r: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, u): the DPM-Solver-1 point a fraction r into the step, where higher orders evaluate eps again."""
    s = t + r * h
    return s, x - _sigma(s) * (r * h).expm1() * eps


def _dpm_solver_2(
    x: torch.Tensor, eps: torch.Tensor, eps_1: torch.Tensor, t_next: torch.Tensor, h: torch.Tensor, r1: float
) -> torch.Tensor:
    """DPM-Solver-2 (Algorithm 1): the slope of eps from its value r1 into the step corrects DPM-Solver-1."""
    return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / (2 * r1) * h.expm1() * (eps_1 - eps)


def _dpm_solver_3(
    model: Denoiser,
    x: torch.Tensor,
    eps: torch.Tensor,
    eps_1: torch.Tensor,
    t: torch.Tensor,
    t_next: torch.Tensor,
    h: torch.Tensor,
) -> torch.Tensor:
    """DPM-Solver-3 (Algorithm 2, r1 = 1/3, r2 = 2/3): a second-order point at r2 supplies the slope."""
    r1, r2 = 1 / 3, 2 / 3
    s2 = t + r2 * h
    phi_r2 = (r2 * h).expm1()
    u2 = x - _sigma(s2) * phi_r2 * eps - _sigma(s2) * (r2 / r1) * (phi_r2 / (r2 * h) - 1) * (eps_1 - eps)
    eps_2 = _eps(model, u2, s2)
    return x - _sigma(t_next) * h.expm1() * eps - _sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_2 - eps)


def _embedded_pair(
    model: Denoiser, x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, order: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(lower, higher): DPM-Solver-1 and -2 (order 2) or -2 and -3 (order 3) over one step.

    The pair shares its model evaluations (-2 at r1 = 1/3 evaluates where -3 needs its first stage), so
    the error estimate of the adaptive solver (the paper's DPM-Solver-12 and -23) costs nothing extra.
    """
    h = t_next - t
    r1 = 1 / 2 if order == 2 else 1 / 3
    lower = _exponential_euler(x, eps, t, t_next) if order == 2 else None
    s1, u1 = _stage(x, eps, t, h, r1)
    eps_1 = _eps(model, u1, s1)
    if lower is not None:
        return lower, _dpm_solver_2(x, eps, eps_1, t_next, h, r1)
    return _dpm_solver_2(x, eps, eps_1, t_next, h, r1), _dpm_solver_3(model, x, eps, eps_1, t, t_next, h)


def _ancestral_target(
    t: torch.Tensor, t_next: torch.Tensor, t_end: torch.Tensor, eta: float
) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(t_down, noise std): solve the ODE past t_next to t_down, then add noise to come back to sigma(t_next).

    The split is the variance-exploding ancestral one (`ancestral_step`); t_down never passes the end.
    """
    if not eta:
        return t_next, 0.0
    sigma_down, _ = ancestral_step(_sigma(t), _sigma(t_next), eta)
    t_down = torch.minimum(t_end, _t(sigma_down))
    return t_down, (_sigma(t_next) ** 2 - _sigma(t_down) ** 2) ** 0.5


def _fast_orders(evaluations: int) -> list[int]:
    """DPM-Solver-fast's steps: third order while three evaluations remain, the rest in lower orders.

    A remainder of 0 ends in orders 2 and 1 rather than one more third-order step, so that the number
    of steps, and so the uniform step in t, is the same as with a remainder of 1 or 2.
    """
    thirds, rest = divmod(evaluations, 3)
    return [3] * (thirds - 1) + [2, 1] if rest == 0 else [3] * thirds + [rest]


@dataclass(frozen=True)
class StepSizeFilter:
    """A PID step-size controller as a digital filter (Söderlind 2003): h_new = h * limit(prod rho_k^b_k).

    rho_k are the inverse errors of this attempt and of the last two accepted steps; the exponents
    b = ((P + I + D), -(P + 2D), D) / order weigh their proportional, integral and derivative parts.
    With P = D = 0 it is the elementary controller h * (1 / error)^(1 / order) of the DPM-Solver paper.
    `limit(f) = 1 + atan(f - 1)` (Söderlind & Wang 2006) keeps any one change of h smooth and bounded.
    """

    exponents: tuple[float, float, float]
    accept_safety: float

    @classmethod
    def pid(
        cls, pcoeff: float, icoeff: float, dcoeff: float, order: float, accept_safety: float
    ) -> StepSizeFilter:
        exponents = ((pcoeff + icoeff + dcoeff) / order, -(pcoeff + 2 * dcoeff) / order, dcoeff / order)
        return cls(exponents, accept_safety)

    def factor(self, rho: float, accepted: tuple[float, float]) -> float:
        """What h is multiplied by after an attempt with inverse error rho; below accept_safety, retry."""
        b1, b2, b3 = self.exponents
        return 1 + math.atan(rho**b1 * accepted[0] ** b2 * accepted[1] ** b3 - 1)


@register("dpm_fast")
def sample_dpm_fast(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver-fast: as many model evaluations as the sigmas have steps, in steps uniform in t."""
    if len(sigmas) <= 1:
        return x
    noise = step_noise(x, extra_args, noise_sampler)
    t_end = _t(_final_sigma(sigmas))
    orders = _fast_orders(len(sigmas) - 1)
    ts = torch.linspace(_t(sigmas[0]), t_end, len(orders) + 1, device=x.device)
    for i, order in enumerate(orders):
        t, t_next = ts[i], ts[i + 1]
        t_down, noise_std = _ancestral_target(t, t_next, t_end, eta)
        eps = _eps(model, x, t)
        report(callback, i, x, _sigma(t), x - _sigma(t) * eps)
        if order == 1:
            x = _exponential_euler(x, eps, t, t_down)
        else:
            x = _embedded_pair(model, x, eps, t, t_down, order)[1]
        if eta:
            x = x + noise_std * s_noise * noise(_sigma(t), _sigma(t_next))
    return x


@register("dpm_adaptive")
def sample_dpm_adaptive(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    order: int = 3,
    rtol: float = 0.05,
    atol: float = 0.0078,
    h_init: float = 0.05,
    pcoeff: float = 0.0,
    icoeff: float = 1.0,
    dcoeff: float = 0.0,
    accept_safety: float = 0.81,
    eta: float = 0.0,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
) -> torch.Tensor:
    """DPM-Solver-12/23 with adaptive steps from the first to the last non-zero sigma; the others are ignored.

    Each attempt scores the lower-order solution against the higher one, per element relative to
    max(atol, rtol * |x|) and RMS over the latent; the step-size filter accepts or retries the step
    and sizes the next one. The result is the higher-order solution. A callback per attempt.
    """
    if len(sigmas) <= 1:
        return x
    if order not in {2, 3}:
        raise ValueError(f"dpm_adaptive: order must be 2 or 3, got {order}")
    noise = step_noise(x, extra_args, noise_sampler)
    s, t_end = _t(sigmas[0]), _t(_final_sigma(sigmas))
    forward = bool(t_end > s)
    if not forward and eta:
        raise ValueError("dpm_adaptive: eta must be 0 unless the sigmas decrease (no noise when inverting)")
    control = StepSizeFilter.pid(pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    h = abs(h_init) * (1 if forward else -1)
    atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
    accepted: tuple[float, float] | None = None
    lower_before = x
    attempt = 0
    while s < t_end - _END_TOLERANCE if forward else s > t_end + _END_TOLERANCE:
        t = torch.minimum(t_end, s + h) if forward else torch.maximum(t_end, s + h)
        t_down, noise_std = _ancestral_target(s, t, t_end, eta)
        eps = _eps(model, x, s)
        denoised = x - _sigma(s) * eps
        lower, higher = _embedded_pair(model, x, eps, s, t_down, order)
        scale = torch.maximum(atol_t, rtol_t * torch.maximum(lower.abs(), lower_before.abs()))
        error = torch.linalg.norm((lower - higher) / scale) / x.numel() ** 0.5
        rho = 1 / (float(error) + _ERROR_FLOOR)
        accepted = accepted or (rho, rho)
        factor = control.factor(rho, accepted)
        h *= factor
        if factor >= control.accept_safety:
            accepted = (rho, accepted[0])
            lower_before, x = lower, higher
            if eta:
                x = x + noise_std * s_noise * noise(_sigma(s), _sigma(t))
            s = t
        report(callback, attempt, x, _sigma(s), denoised)
        attempt += 1
    return x
