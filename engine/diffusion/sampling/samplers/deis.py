"""DEIS's tabulated multistep weights (Zhang & Chen 2022, the zju-pi/diff-sampler formulation).

The step sigmas are mapped to the time t of a variance-preserving process whose schedule is pinned
by sigma 0.002 at t = 1e-3 and sigma 80 at t = 1 (the EDM range; any fixed monotone map gives a valid
solver, this one is what ComfyUI uses). In that time, dsigma/dt is closed-form, and the weight of a
past derivative is the integral over the step of dsigma/dt times that derivative's Lagrange basis
polynomial, by the same 10000-point rectangle rule ComfyUI uses.
"""

from __future__ import annotations

import math

import torch

_EPSILON_S = 1e-3
_SIGMA_MIN = 0.002
_SIGMA_MAX = 80.0
_QUADRATURE_POINTS = 10000


def _vp_schedule() -> tuple[float, float]:
    """(beta_min, beta_d) of the VP process with sigma(eps_s) = 0.002 and sigma(1) = 80."""
    log_min, log_max = math.log(_SIGMA_MIN**2 + 1), math.log(_SIGMA_MAX**2 + 1)
    beta_d = 2 * (log_min / _EPSILON_S - log_max) / (_EPSILON_S - 1)
    beta_min = log_max - 0.5 * beta_d
    return beta_min, beta_d


def _sigma_to_vp_time(sigmas: torch.Tensor, beta_min: float, beta_d: float) -> torch.Tensor:
    return ((beta_min**2 + 2 * beta_d * (sigmas**2 + 1).log()).sqrt() - beta_min) / beta_d


def _dsigma_dt(t: torch.Tensor, beta_min: float, beta_d: float) -> torch.Tensor:
    """d sigma / d t for alpha_bar(t) = exp(-(beta_d t^2 / 2 + beta_min t)) and sigma^2 = 1/alpha_bar - 1."""
    alpha_bar = torch.exp(-0.5 * t**2 * beta_d - t * beta_min)
    return 0.5 * (beta_min + beta_d * t) / torch.sqrt(alpha_bar * (1 - alpha_bar))


def deis_coefficients(sigmas: torch.Tensor, max_order: int) -> list[list[torch.Tensor]]:
    """Per step, the weights of the current and up to max_order - 1 previous derivatives (none at order 1)."""
    beta_min, beta_d = _vp_schedule()
    t_steps = _sigma_to_vp_time(sigmas.detach().cpu(), beta_min, beta_d)
    weights: list[list[torch.Tensor]] = []
    for i in range(len(t_steps) - 1):
        order = min(i + 1, max_order)
        if order == 1:
            weights.append([])
            continue
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        taus = torch.linspace(t_cur, t_next, _QUADRATURE_POINTS)
        dtau = (t_next - t_cur) / _QUADRATURE_POINTS
        integrand = _dsigma_dt(taus, beta_min, beta_d)
        nodes = t_steps[[i - k for k in range(order)]]
        step_weights = []
        for j in range(order):
            basis = torch.ones_like(taus)
            for k in range(order):
                if k != j:
                    basis = basis * (taus - nodes[k]) / (nodes[j] - nodes[k])
            step_weights.append((torch.sum(integrand * basis) * dtau).to(sigmas.device))
        weights.append(step_weights)
    return weights
