"""SA-Solver (Xue et al., NeurIPS 2023): a stochastic Adams predictor-corrector on x0 in half-log-SNR.

The predictor extrapolates x0 from the last `predictor_order` evaluations; the corrector, once the
model has been evaluated at the predicted point, re-solves the same step with that evaluation
included. Noise (strength tau) is injected only while sigma lies within the middle 20-80 % of
sampling progress by default. In "pece" mode the model is evaluated again at the corrected point.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from engine.diffusion.sampling.noise import NoiseSampler
from engine.diffusion.sampling.samplers.common import Denoiser, StepCallback, report, snr_safe, step_noise
from engine.diffusion.sampling.samplers.registry import register

TauFunction = Callable[[torch.Tensor | float], float]


def tau_interval(start_sigma: float, end_sigma: float, eta: float = 1.0) -> TauFunction:
    """Stochastic strength eta while start_sigma >= sigma >= end_sigma, otherwise 0 (an ODE step)."""

    def tau(sigma: torch.Tensor | float) -> float:
        if eta <= 0:
            return 0.0
        value = float(sigma)
        return eta if start_sigma >= value >= end_sigma else 0.0

    return tau


def exponential_coefficients(s: torch.Tensor, t: torch.Tensor, order: int, tau: float) -> torch.Tensor:
    """(1 + tau^2) * integral over [s, t] of exp((1 + tau^2) x) x^p, p < order, exp((1 + tau^2) t) taken out.

    Integration by parts gives each power from the one below; the recursion is one lower-triangular matrix.
    """
    tau_mul = 1 + tau**2
    h = t - s
    p = torch.arange(order, dtype=s.dtype, device=s.device)
    boundary_terms = t**p - s**p * (-tau_mul * h).exp()
    depth = p.unsqueeze(1) - p.unsqueeze(0)
    log_factorial = (p + 1).lgamma()
    log_coefficients = log_factorial.unsqueeze(1) - log_factorial.unsqueeze(0)
    if tau > 0:
        log_coefficients = log_coefficients - depth * math.log(tau_mul)
    signs = torch.where(depth % 2 == 0, 1.0, -1.0)
    return (log_coefficients.exp() * signs).tril() @ boundary_terms


def simple_order_2_coefficients(
    sigma_next: torch.Tensor,
    lambdas: torch.Tensor,
    lambda_s: torch.Tensor,
    lambda_t: torch.Tensor,
    tau: float,
    corrector: bool,
) -> torch.Tensor:
    """The simplified second-order weights of the paper's appendix D."""
    tau_mul = 1 + tau**2
    h = lambda_t - lambda_s
    alpha_t = sigma_next * lambda_t.exp()
    if corrector:
        b_1 = alpha_t * (0.5 * tau_mul * h)
        b_2 = alpha_t * (-h * tau_mul).expm1().neg() - b_1
    else:
        b_2 = alpha_t * (0.5 * tau_mul * h**2) / (lambdas[-2] - lambda_s)
        b_1 = alpha_t * (-h * tau_mul).expm1().neg() - b_2
    return torch.stack([b_2, b_1])


def adams_coefficients(
    sigma_next: torch.Tensor,
    lambdas: torch.Tensor,
    lambda_s: torch.Tensor,
    lambda_t: torch.Tensor,
    tau: float,
    simple_order_2: bool,
    corrector: bool,
) -> torch.Tensor:
    """Weights of the x0 evaluations at `lambdas` for a step from lambda_s to lambda_t (eqs. 15 and 18)."""
    count = lambdas.shape[0]
    if simple_order_2 and count == 2:
        return simple_order_2_coefficients(sigma_next, lambdas, lambda_s, lambda_t, tau, corrector)
    integrals = exponential_coefficients(lambda_s, lambda_t, count, tau)
    vandermonde_t = torch.vander(lambdas, count, increasing=True).T
    lagrange_integrals = torch.linalg.solve(vandermonde_t, integrals)
    return sigma_next * lambda_t.exp() * lagrange_integrals


def _sa_solver(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None,
    callback: StepCallback | None,
    tau_func: TauFunction | None,
    s_noise: float,
    noise_sampler: NoiseSampler | None,
    predictor_order: int,
    corrector_order: int,
    use_pece: bool,
    simple_order_2: bool,
) -> torch.Tensor:
    if len(sigmas) <= 1:
        return x
    noise_source = step_noise(x, extra_args, noise_sampler)
    ms = model.model_sampling
    sigmas = snr_safe(sigmas, ms)
    lambdas = ms.half_log_snr(sigmas)
    if tau_func is None:
        tau_func = tau_interval(ms.percent_to_sigma(0.2), ms.percent_to_sigma(0.8))
    s_in = x.new_ones([x.shape[0]])
    history_size = max(predictor_order, corrector_order)
    x_pred = x
    h = lambdas.new_zeros(())  # set before any corrector step reads it (there is none at step 0)
    tau = 0.0
    noise: torch.Tensor | float = 0.0
    predictions: list[torch.Tensor] = []
    lower_order_to_end = sigmas[-1].item() == 0
    for i in range(len(sigmas) - 1):
        denoised = model(x_pred, sigmas[i] * s_in)
        report(callback, i, x_pred, sigmas[i], denoised)
        predictions = [*predictions, denoised][-history_size:]

        predictor_used = min(predictor_order, len(predictions))
        corrector_used = (
            0 if i == 0 or (sigmas[i + 1] == 0 and not use_pece) else min(corrector_order, len(predictions))
        )
        if lower_order_to_end:
            predictor_used = min(predictor_used, len(sigmas) - 2 - i)
            corrector_used = min(corrector_used, len(sigmas) - 1 - i)

        if corrector_used == 0:
            x = x_pred
        else:
            b = adams_coefficients(
                sigmas[i],
                lambdas[i - corrector_used + 1 : i + 1],
                lambdas[i - 1],
                lambdas[i],
                tau,
                simple_order_2,
                True,
            )
            stacked = torch.stack(predictions[-corrector_used:], dim=1)
            x = sigmas[i] / sigmas[i - 1] * (-(tau**2) * h).exp() * x + torch.tensordot(
                stacked, b, dims=([1], [0])
            )
            if tau > 0 and s_noise > 0:
                x = x + noise
            if use_pece:
                denoised = model(x, sigmas[i] * s_in)
                predictions[-1] = denoised

        if sigmas[i + 1] == 0:
            x_pred = denoised
        else:
            tau = tau_func(sigmas[i + 1])
            b = adams_coefficients(
                sigmas[i + 1],
                lambdas[i - predictor_used + 1 : i + 1],
                lambdas[i],
                lambdas[i + 1],
                tau,
                simple_order_2,
                False,
            )
            stacked = torch.stack(predictions[-predictor_used:], dim=1)
            h = lambdas[i + 1] - lambdas[i]
            x_pred = sigmas[i + 1] / sigmas[i] * (-(tau**2) * h).exp() * x + torch.tensordot(
                stacked, b, dims=([1], [0])
            )
            if tau > 0 and s_noise > 0:
                noise = (
                    noise_source(sigmas[i], sigmas[i + 1])
                    * sigmas[i + 1]
                    * (-2 * tau**2 * h).expm1().neg().sqrt()
                    * s_noise
                )
                x_pred = x_pred + noise
    return x_pred


@register("sa_solver")
def sample_sa_solver(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    tau_func: TauFunction | None = None,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    predictor_order: int = 3,
    corrector_order: int = 4,
    simple_order_2: bool = False,
) -> torch.Tensor:
    return _sa_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        tau_func,
        s_noise,
        noise_sampler,
        predictor_order,
        corrector_order,
        use_pece=False,
        simple_order_2=simple_order_2,
    )


@register("sa_solver_pece")
def sample_sa_solver_pece(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    tau_func: TauFunction | None = None,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    predictor_order: int = 3,
    corrector_order: int = 4,
    simple_order_2: bool = False,
) -> torch.Tensor:
    """SA-Solver evaluating the model again at each corrected point (predict-evaluate-correct-evaluate)."""
    return _sa_solver(
        model,
        x,
        sigmas,
        extra_args,
        callback,
        tau_func,
        s_noise,
        noise_sampler,
        predictor_order,
        corrector_order,
        use_pece=True,
        simple_order_2=simple_order_2,
    )
