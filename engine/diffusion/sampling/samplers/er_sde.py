"""ER-SDE-Solver-3 (Cui et al. 2023, arXiv 2309.06169) for the variance-preserving extended reverse SDE.

The paper writes the family of reverse-time processes that share the data's marginals with one
noise-scale function phi of lambda = sigma / alpha (for a flow model alpha = 1 - sigma). Its VP
solution from s to t (lambda_t < lambda_s) is, exactly,

    x_t = alpha_t / alpha_s * r * x_s
          + alpha_t phi(lambda_t) int_{lambda_t}^{lambda_s} phi'(lambda) / phi(lambda)^2 x0(lambda) dlambda
          + alpha_t sqrt(lambda_t^2 - lambda_s^2 r^2) z,        r = phi(lambda_t) / phi(lambda_s).

The solver expands x0 in lambda about lambda_s to the second derivative (estimated from the last
three evaluations by divided differences) and integrates each term by parts, which leaves
integrals of 1 / phi that the default phi has no closed form for. phi(lambda) = lambda makes the
noise term vanish (the probability-flow ODE); the default lies between that and the reverse SDE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from engine.diffusion.sampling.noise import NoiseSampler
from engine.diffusion.sampling.samplers.common import Denoiser, StepCallback, report, snr_safe, step_noise
from engine.diffusion.sampling.samplers.registry import register

NoiseScale = Callable[[torch.Tensor], torch.Tensor]

QUADRATURE_POINTS = 200.0
"""Rectangle-rule points for the integrals of 1 / phi over one step, as the authors' code uses."""


def default_noise_scale(lam: torch.Tensor) -> torch.Tensor:
    """The paper's ER-SDE-Solver noise-scale function phi(lambda) = lambda (e^(lambda^0.3) + 10)."""
    return lam * ((lam**0.3).exp() + 10.0)


def taylor_weights(
    phi: NoiseScale,
    lam_s: torch.Tensor,
    lam_t: torch.Tensor,
    alpha_t: torch.Tensor,
    order: int,
    nodes: torch.Tensor,
) -> list[torch.Tensor]:
    """The weights of x0 and of its first and second lambda-derivatives at s in one step, up to `order`.

    k-th term: alpha_t phi(lambda_t) int phi'/phi^2 (lambda - lambda_s)^k / k!, by parts
        k = 0:  alpha_t (1 - r)
        k = 1:  alpha_t ((lambda_t - lambda_s) + phi(lambda_t) int 1 / phi)
        k = 2:  alpha_t ((lambda_t - lambda_s)^2 / 2 + phi(lambda_t) int (lambda - lambda_s) / phi)
    the integrals over [lambda_t, lambda_s] by the left rectangle rule from lambda_t.
    """
    weights = [alpha_t * (1 - phi(lam_t) / phi(lam_s))]
    if order < 2:
        return weights
    dt = lam_t - lam_s
    width = -dt / QUADRATURE_POINTS
    points = lam_t + nodes * width
    phi_points = phi(points)
    weights.append(alpha_t * (dt + torch.sum(1 / phi_points) * width * phi(lam_t)))
    if order >= 3:
        moment_integral = torch.sum((points - lam_s) / phi_points) * width
        weights.append(alpha_t * ((dt**2) / 2 + moment_integral * phi(lam_t)))
    return weights


@register("er_sde")
def sample_er_sde(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
    s_noise: float = 1.0,
    noise_sampler: NoiseSampler | None = None,
    noise_scaler: NoiseScale | None = None,
    max_stage: int = 3,
) -> torch.Tensor:
    """VP ER-SDE-Solver of order min(max_stage, steps taken so far + 1); `noise_scaler` is phi."""
    noise = step_noise(x, extra_args, noise_sampler)
    phi = noise_scaler or default_noise_scale
    nodes = torch.arange(0, QUADRATURE_POINTS, dtype=torch.float32, device=x.device)
    ms = model.model_sampling
    sigmas = snr_safe(sigmas, ms)
    lambdas = ms.half_log_snr(sigmas).neg().exp()
    s_in = x.new_ones([x.shape[0]])
    x0_before: torch.Tensor | None = None
    slope_before: torch.Tensor | None = None
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i] * s_in)
        report(callback, i, x, sigmas[i], x0)
        if sigmas[i + 1] == 0:
            x = x0
        else:
            lam_s, lam_t = lambdas[i], lambdas[i + 1]
            alpha_s, alpha_t = sigmas[i] / lam_s, sigmas[i + 1] / lam_t
            r = phi(lam_t) / phi(lam_s)
            order = min(max_stage, i + 1)
            weights = taylor_weights(phi, lam_s, lam_t, alpha_t, order, nodes)
            x = alpha_t / alpha_s * r * x + weights[0] * x0
            if order >= 2 and x0_before is not None:
                slope = (x0 - x0_before) / (lam_s - lambdas[i - 1])
                x = x + weights[1] * slope
                if order >= 3 and slope_before is not None:
                    x = x + weights[2] * ((slope - slope_before) / ((lam_s - lambdas[i - 2]) / 2))
                slope_before = slope
            if s_noise > 0:
                spread = (lam_t**2 - lam_s**2 * r**2).sqrt().nan_to_num(nan=0.0)
                x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * spread
        x0_before = x0
    return x
