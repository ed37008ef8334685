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

from typing import Any

import torch

from engine.diffusion.sampling.samplers.common import Denoiser, StepCallback, report
from engine.diffusion.sampling.samplers.registry import register

UNI_PC_FINAL_SIGMA = 0.001


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


class UniPC:
    """The predictor-corrector update of one variant; the sampling loop below keeps the history."""

    def __init__(self, model: Denoiser, variant: str) -> None:
        if variant not in {"bh1", "bh2"}:
            raise ValueError(f"unknown UniPC variant {variant!r}")
        self.model = model
        self.variant = variant

    def x0(self, x_vp: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The model's x0 for a point given in the variance-preserving view."""
        return self.model(x_vp * torch.sqrt(1 + sigma**2), sigma * x_vp.new_ones([x_vp.shape[0]]))

    def update(
        self,
        x: torch.Tensor,
        x0_history: list[torch.Tensor],
        sigma_history: list[torch.Tensor],
        sigma: torch.Tensor,
        order: int,
        use_corrector: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One step to `sigma`; returns the new x and, if corrected, the model's x0 at the predicted point."""
        lambda_prev = _lambda(sigma_history[-1])
        h = _lambda(sigma) - lambda_prev
        x0_prev = x0_history[-1]
        alpha_t = _alpha(sigma)

        ratios: list[torch.Tensor] = []
        differences: list[torch.Tensor] = []
        for i in range(1, order):
            ratio = (_lambda(sigma_history[-(i + 1)]) - lambda_prev) / h
            ratios.append(ratio)
            differences.append((x0_history[-(i + 1)] - x0_prev) / ratio)
        r = torch.stack([*ratios, h.new_tensor(1.0)])

        hh = -h
        h_phi_1 = torch.expm1(hh)
        h_phi_k = h_phi_1 / hh - 1
        b_h = hh if self.variant == "bh1" else torch.expm1(hh)
        rows, rhs = [], []
        factorial = 1
        for i in range(1, order + 1):
            rows.append(r ** (i - 1))
            rhs.append(h_phi_k * factorial / b_h)
            factorial *= i + 1
            h_phi_k = h_phi_k / hh - 1 / factorial
        matrix, b = torch.stack(rows), torch.stack(rhs)

        stacked = torch.stack(differences, dim=1) if differences else None
        x_base = (_vp_sigma(sigma) / _vp_sigma(sigma_history[-1])) * x - alpha_t * h_phi_1 * x0_prev
        predicted = x_base
        if stacked is not None:
            rhos_p = b.new_tensor([0.5]) if order == 2 else torch.linalg.solve(matrix[:-1, :-1], b[:-1])
            predicted = x_base - alpha_t * b_h * _weighted(rhos_p, stacked)
        if not use_corrector:
            return predicted, None

        rhos_c = b.new_tensor([0.5]) if order == 1 else torch.linalg.solve(matrix, b)
        x0_new = self.x0(predicted, sigma)
        correction = rhos_c[-1] * (x0_new - x0_prev)
        if stacked is not None:
            correction = correction + _weighted(rhos_c[:-1], stacked)
        return x_base - alpha_t * b_h * correction, x0_new


def _uni_pc(
    model: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, callback: StepCallback | None, variant: str
) -> torch.Tensor:
    sigmas = sigmas.clone()
    if sigmas[-1] == 0:
        sigmas[-1] = UNI_PC_FINAL_SIGMA
    solver = UniPC(model, variant)
    steps = len(sigmas) - 1
    order = min(3, len(sigmas) - 2)
    x = x / torch.sqrt(1.0 + sigmas[0] ** 2.0)
    x0_history: list[torch.Tensor] = []
    sigma_history: list[torch.Tensor] = []
    for step in range(steps):
        if step == 0:
            x0_history, sigma_history = [solver.x0(x, sigmas[0])], [sigmas[0]]
        elif step < order:
            x, x0 = solver.update(x, x0_history, sigma_history, sigmas[step], step, use_corrector=True)
            assert x0 is not None
            x0_history.append(x0)
            sigma_history.append(sigmas[step])
        else:
            targets = [step, steps] if step == steps - 1 else [step]
            for target in targets:
                step_order = min(order, steps + 1 - target)
                x, x0 = solver.update(
                    x, x0_history, sigma_history, sigmas[target], step_order, use_corrector=target != steps
                )
                x0_history = x0_history[1:] + x0_history[-1:]
                sigma_history = [*sigma_history[1:], sigmas[target]]
                if x0 is not None:
                    x0_history[-1] = x0
        report(callback, step, x, sigmas[step], x0_history[-1])
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
