"""UniPC (Zhao et al. 2023, arXiv 2302.04867): multistep predictor, corrector that reuses its evaluation.

The solver works on a variance-preserving view of the same ODE: x_vp = x / sqrt(1 + sigma^2),
alpha = 1 / sqrt(1 + sigma^2), lambda = -log sigma, data prediction. Each step predicts with up to
third order from earlier x0, evaluates the model at the predicted point, then corrects the step
with that evaluation, which also serves as the next step's history: one evaluation per step.
`bh1` and `bh2` differ in the B(h) normaliser of the update (h and e^h - 1).

As in ComfyUI, a final sigma of 0 is replaced by UNI_PC_FINAL_SIGMA (the log-SNR step to 0 would be
infinite); the code around the sampler un-scales the result with that sigma (`SamplerSpec.final_sigma`).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from engine.diffusion.sampling.samplers.common import Denoiser, StepCallback, report
from engine.diffusion.sampling.samplers.registry import register

UNI_PC_FINAL_SIGMA = 0.001

Variant = Literal["bh1", "bh2"]
"""B(h) = h (bh1) or e^h - 1 (bh2): the normaliser of the update's higher-order terms."""


def _alpha(sigma: torch.Tensor) -> torch.Tensor:
    return torch.exp(0.5 * torch.log(1 / (sigma * sigma + 1)))


def _vp_sigma(sigma: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(1.0 - _alpha(sigma) ** 2)


def _lambda(sigma: torch.Tensor) -> torch.Tensor:
    log_alpha = 0.5 * torch.log(1 / (sigma * sigma + 1))
    return log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))


def _weighted(weights: torch.Tensor, stacked: torch.Tensor) -> torch.Tensor:
    """sum_k weights[k] * stacked[:, k]."""
    return torch.tensordot(stacked, weights, dims=([1], [0]))


def _x0(model: Denoiser, x_vp: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The model's x0 at a point of the variance-preserving view, scaled back for the model first."""
    return model(x_vp * torch.sqrt(1 + sigma**2), sigma * x_vp.new_ones([x_vp.shape[0]]))


def _order_conditions(
    r: torch.Tensor, h: torch.Tensor, order: int, variant: Variant
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R, g / B(h), B(h)): the linear system R rho = g / B(h) whose solution rho weights the x0 differences.

    Row k of R holds the (k - 1)-th powers of the ratios r_m of the history's steps to this one (1 for
    the newest point); g_k = k! z phi_(k+1)(z) at z = -h, from phi_(k+1)(z) = (phi_k(z) - 1 / k!) / z.
    """
    hh = -h
    h_phi_k = torch.expm1(hh) / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, rhs = [], []
    factorial = 1
    for k in range(1, order + 1):
        rows.append(r ** (k - 1))
        rhs.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return torch.stack(rows), torch.stack(rhs), b_h


def _unipc_step(
    model: Denoiser,
    variant: Variant,
    x: torch.Tensor,
    x0s: list[torch.Tensor],
    sigma_points: list[torch.Tensor],
    sigma: torch.Tensor,
    order: int,
    use_corrector: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One UniP-p step to `sigma` and, unless it is the last, its UniC-p correction.

    Returns the new x and the model's x0 at the predicted point (None without the corrector), which
    the corrector needs and the next step reuses as its newest history point: one evaluation a step.
    """
    lambda_prev = _lambda(sigma_points[-1])
    h = _lambda(sigma) - lambda_prev
    x0_prev = x0s[-1]
    alpha_t = _alpha(sigma)
    ratios = [(_lambda(sigma_points[-(k + 1)]) - lambda_prev) / h for k in range(1, order)]
    differences = [(x0s[-(k + 1)] - x0_prev) / ratio for k, ratio in enumerate(ratios, start=1)]
    matrix, rhs, b_h = _order_conditions(torch.stack([*ratios, h.new_tensor(1.0)]), h, order, variant)

    stacked = torch.stack(differences, dim=1) if differences else None
    x_base = (_vp_sigma(sigma) / _vp_sigma(sigma_points[-1])) * x - alpha_t * torch.expm1(-h) * x0_prev
    predicted = x_base
    if stacked is not None:
        rhos_p = rhs.new_tensor([0.5]) if order == 2 else torch.linalg.solve(matrix[:-1, :-1], rhs[:-1])
        predicted = x_base - alpha_t * b_h * _weighted(rhos_p, stacked)
    if not use_corrector:
        return predicted, None

    rhos_c = rhs.new_tensor([0.5]) if order == 1 else torch.linalg.solve(matrix, rhs)
    x0_new = _x0(model, predicted, sigma)
    correction = rhos_c[-1] * (x0_new - x0_prev)
    if stacked is not None:
        correction = correction + _weighted(rhos_c[:-1], stacked)
    return x_base - alpha_t * b_h * correction, x0_new


def _uni_pc(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None, variant: Variant
) -> torch.Tensor:
    """UniPC of order up to 3, lower at the start (too little history) and at the end (ComfyUI's
    lower_order_final). As in ComfyUI, one step evaluates the model once and moves nowhere."""
    sigmas = sigmas.clone()
    if sigmas[-1] == 0:
        sigmas[-1] = UNI_PC_FINAL_SIGMA
    steps = len(sigmas) - 1
    order = min(3, steps - 1)
    x = x / torch.sqrt(1.0 + sigmas[0] ** 2.0)
    x0s, sigma_points = [_x0(model, x, sigmas[0])], [sigmas[0]]
    report(callback, 0, x, sigmas[0], x0s[-1])
    if order < 1:
        return x / _alpha(sigmas[-1])
    for target in range(1, steps + 1):
        step_order = min(order, target, steps + 1 - target)
        x, x0 = _unipc_step(
            model, variant, x, x0s, sigma_points, sigmas[target], step_order, use_corrector=target != steps
        )
        x0s = [*x0s, x0 if x0 is not None else x0s[-1]][-order:]
        sigma_points = [*sigma_points, sigmas[target]][-order:]
        if target == steps - 1:
            continue  # the last two updates count as one step, reported after the final one
        i = min(target, steps - 1)
        report(callback, i, x, sigmas[i], x0s[-1])
    return x / _alpha(sigmas[-1])


@register("uni_pc", final_sigma=UNI_PC_FINAL_SIGMA)
def sample_uni_pc(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """UniPC with B(h) = h."""
    return _uni_pc(model, x, sigmas, callback, "bh1")


@register("uni_pc_bh2", final_sigma=UNI_PC_FINAL_SIGMA)
def sample_uni_pc_bh2(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """UniPC with B(h) = e^h - 1."""
    return _uni_pc(model, x, sigmas, callback, "bh2")
