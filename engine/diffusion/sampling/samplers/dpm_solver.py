"""DPM-Solver (Lu et al. 2022, arXiv 2206.00927) on the noise prediction, in t = -log sigma.

dpm_fast takes a fixed number of model evaluations in third-order steps; dpm_adaptive picks its
own steps with an embedded error estimate and a PID step-size controller. Both integrate from the
first sigma down to the last non-zero one and stop there (as in ComfyUI): their result keeps that
last, small amount of noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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

EpsCache = dict[str, torch.Tensor]


class PIDStepSizeController:
    """Scales the step by the last three inverse errors; rejects a step whose scale factor is too small."""

    def __init__(
        self,
        h: float,
        pcoeff: float,
        icoeff: float,
        dcoeff: float,
        order: float = 1,
        accept_safety: float = 0.81,
        eps: float = 1e-8,
    ) -> None:
        self.h = h
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.accept_safety = accept_safety
        self.eps = eps
        self.errs: list[float] = []

    def propose_step(self, error: torch.Tensor) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error, inv_error, inv_error]
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2] = self.errs[1]
            self.errs[1] = self.errs[0]
        self.h *= factor
        return accept


InfoCallback = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]
"""(step, x, sigma, x0): what the solver reports after each (attempted) step."""


class DPMSolver:
    """Single-step DPM-Solver of orders 1 to 3; a step's intermediate noise predictions are cached by key."""

    def __init__(self, model: Denoiser, info_callback: InfoCallback) -> None:
        self.model = model
        self.info_callback = info_callback

    @staticmethod
    def t(sigma: torch.Tensor) -> torch.Tensor:
        return sigma.log().neg()

    @staticmethod
    def sigma(t: torch.Tensor) -> torch.Tensor:
        return t.neg().exp()

    def eps(
        self, cache: EpsCache, key: str, x: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, EpsCache]:
        """The noise prediction (x - x0) / sigma at (x, t), evaluated once per key within a step."""
        if key in cache:
            return cache[key], cache
        sigma = self.sigma(t) * x.new_ones([x.shape[0]])
        eps = (x - self.model(x, sigma)) / self.sigma(t)
        return eps, {key: eps, **cache}

    def first_order_step(
        self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: EpsCache
    ) -> tuple[torch.Tensor, EpsCache]:
        h = t_next - t
        eps, cache = self.eps(cache, "eps", x, t)
        return x - self.sigma(t_next) * h.expm1() * eps, cache

    def second_order_step(
        self, x: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, cache: EpsCache, r1: float = 1 / 2
    ) -> tuple[torch.Tensor, EpsCache]:
        h = t_next - t
        eps, cache = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, cache = self.eps(cache, "eps_r1", u1, s1)
        x_2 = (
            x
            - self.sigma(t_next) * h.expm1() * eps
            - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
        )
        return x_2, cache

    def third_order_step(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        cache: EpsCache,
        r1: float = 1 / 3,
        r2: float = 2 / 3,
    ) -> tuple[torch.Tensor, EpsCache]:
        h = t_next - t
        eps, cache = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        s2 = t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1, cache = self.eps(cache, "eps_r1", u1, s1)
        u2 = (
            x
            - self.sigma(s2) * (r2 * h).expm1() * eps
            - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps)
        )
        eps_r2, cache = self.eps(cache, "eps_r2", u2, s2)
        x_3 = (
            x
            - self.sigma(t_next) * h.expm1() * eps
            - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
        )
        return x_3, cache

    def fast(
        self,
        x: torch.Tensor,
        t_start: torch.Tensor,
        t_end: torch.Tensor,
        nfe: int,
        eta: float,
        s_noise: float,
        noise: NoiseSampler,
    ) -> torch.Tensor:
        m = math.floor(nfe / 3) + 1
        ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
        orders = [3] * (m - 2) + [2, 1] if nfe % 3 == 0 else [3] * (m - 1) + [nfe % 3]
        for i, order in enumerate(orders):
            cache: EpsCache = {}
            t, t_next = ts[i], ts[i + 1]
            t_target, su = t_next, 0.0
            if eta:
                sd, _ = ancestral_step(self.sigma(t), self.sigma(t_next), eta)
                t_target = torch.minimum(t_end, self.t(sd))
                su = (self.sigma(t_next) ** 2 - self.sigma(t_target) ** 2) ** 0.5
            eps, cache = self.eps(cache, "eps", x, t)
            self.info_callback(i, x, self.sigma(t), x - self.sigma(t) * eps)
            step = (self.first_order_step, self.second_order_step, self.third_order_step)[order - 1]
            x, cache = step(x, t, t_target, cache)
            if eta:
                x = x + su * s_noise * noise(self.sigma(t), self.sigma(t_next))
        return x

    def adaptive(
        self,
        x: torch.Tensor,
        t_start: torch.Tensor,
        t_end: torch.Tensor,
        order: int,
        rtol: float,
        atol: float,
        h_init: float,
        pcoeff: float,
        icoeff: float,
        dcoeff: float,
        accept_safety: float,
        eta: float,
        s_noise: float,
        noise: NoiseSampler,
    ) -> torch.Tensor:
        if order not in {2, 3}:
            raise ValueError("order should be 2 or 3")
        forward = t_end > t_start
        if not forward and eta:
            raise ValueError("eta must be 0 for reverse sampling")
        h_init = abs(h_init) * (1 if forward else -1)
        atol_t, rtol_t = torch.tensor(atol), torch.tensor(rtol)
        s = t_start
        x_prev = x
        pid = PIDStepSizeController(h_init, pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
        attempts = 0
        while s < t_end - 1e-5 if forward else s > t_end + 1e-5:
            cache: EpsCache = {}
            t = torch.minimum(t_end, s + pid.h) if forward else torch.maximum(t_end, s + pid.h)
            t_target, su = t, 0.0
            if eta:
                sd, _ = ancestral_step(self.sigma(s), self.sigma(t), eta)
                t_target = torch.minimum(t_end, self.t(sd))
                su = (self.sigma(t) ** 2 - self.sigma(t_target) ** 2) ** 0.5
            eps, cache = self.eps(cache, "eps", x, s)
            denoised = x - self.sigma(s) * eps
            if order == 2:
                x_low, cache = self.first_order_step(x, s, t_target, cache)
                x_high, cache = self.second_order_step(x, s, t_target, cache)
            else:
                x_low, cache = self.second_order_step(x, s, t_target, cache, r1=1 / 3)
                x_high, cache = self.third_order_step(x, s, t_target, cache)
            delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
            error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
            if pid.propose_step(error):
                x_prev = x_low
                x = x_high
                if eta:
                    x = x + su * s_noise * noise(self.sigma(s), self.sigma(t))
                s = t
            attempts += 1
            self.info_callback(attempts - 1, x, self.sigma(s), denoised)
        return x


def _final_sigma(sigmas: torch.Tensor) -> torch.Tensor:
    """The last non-zero sigma: where these solvers stop."""
    return sigmas[-2] if sigmas[-1] == 0 else sigmas[-1]


def _info_callback(callback: StepCallback | None) -> InfoCallback:
    def emit(i: int, x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> None:
        report(callback, i, x, sigma, denoised)

    return emit


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
    """DPM-Solver-fast with as many model evaluations as the sigmas have steps."""
    if len(sigmas) <= 1:
        return x
    solver = DPMSolver(model, _info_callback(callback))
    noise = step_noise(x, extra_args, noise_sampler)
    t_start, t_end = solver.t(sigmas[0].clone()), solver.t(_final_sigma(sigmas).clone())
    return solver.fast(x, t_start, t_end, len(sigmas) - 1, eta, s_noise, noise)


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
    """DPM-Solver-12/23, adaptive steps from the first to the last non-zero sigma; the others are ignored."""
    if len(sigmas) <= 1:
        return x
    solver = DPMSolver(model, _info_callback(callback))
    noise = step_noise(x, extra_args, noise_sampler)
    t_start, t_end = solver.t(sigmas[0].clone()), solver.t(_final_sigma(sigmas).clone())
    return solver.adaptive(
        x,
        t_start,
        t_end,
        order,
        rtol,
        atol,
        h_init,
        pcoeff,
        icoeff,
        dcoeff,
        accept_safety,
        eta,
        s_noise,
        noise,
    )
