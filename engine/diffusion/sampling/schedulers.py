"""The nine schedulers of ComfyUI, each a pure function (model sampling, steps) -> sigmas (COMFY.md §7).

Every schedule runs from the model's largest sigma down and ends in 0, except where ComfyUI's does
not (kl_optimal with one step divides by zero; normal skips the appended 0 when its last sigma is
already 0). Values are produced in float32 the way ComfyUI produces them: index-based schedulers
copy table entries, formula-based ones evaluate the formula on float32 tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.stats
import torch

from engine.diffusion.sampling.model_sampling import FlowModelSampling

Scheduler = Callable[[FlowModelSampling, int], torch.Tensor]


def _with_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros([1])])


def simple(ms: FlowModelSampling, steps: int) -> torch.Tensor:
    """Evenly spaced table entries from the top."""
    stride = len(ms.sigmas) / steps
    picked = [float(ms.sigmas[-(1 + int(i * stride))]) for i in range(steps)]
    return torch.FloatTensor([*picked, 0.0])


def _uniform_in_time(ms: FlowModelSampling, steps: int, sgm: bool) -> torch.Tensor:
    start, end = ms.timestep(ms.sigma_max), ms.timestep(ms.sigma_min)
    append_zero = True
    if sgm:
        timesteps = torch.linspace(start, end, steps + 1)[:-1]
    else:
        if math.isclose(float(ms.sigma(end)), 0, abs_tol=0.00001):
            steps += 1
            append_zero = False
        timesteps = torch.linspace(start, end, steps)
    picked = [float(ms.sigma(t)) for t in timesteps]
    if append_zero:
        picked.append(0.0)
    return torch.FloatTensor(picked)


def sgm_uniform(ms: FlowModelSampling, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from the top, the last one (at sigma_min) left out for the final 0."""
    return _uniform_in_time(ms, steps, sgm=True)


def normal(ms: FlowModelSampling, steps: int) -> torch.Tensor:
    """Timesteps evenly spaced from sigma_max's to sigma_min's inclusive, then 0."""
    return _uniform_in_time(ms, steps, sgm=False)


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022): evenly spaced in sigma^(1/rho)."""
    ramp = torch.linspace(0, 1, n)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _with_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def karras(ms: FlowModelSampling, steps: int) -> torch.Tensor:
    return karras_sigmas(steps, float(ms.sigma_min), float(ms.sigma_max))


def exponential(ms: FlowModelSampling, steps: int) -> torch.Tensor:
    """Evenly spaced in log sigma."""
    log_sigmas = torch.linspace(math.log(float(ms.sigma_max)), math.log(float(ms.sigma_min)), steps)
    return _with_zero(log_sigmas.exp())


def ddim_uniform(ms: FlowModelSampling, steps: int) -> torch.Tensor:
    """Every (table size // steps)-th table entry from index 1 upwards, reversed, ending in 0."""
    picked = [0.0]
    if math.isclose(float(ms.sigmas[1]), 0, abs_tol=0.00001):
        steps += 1
        picked = []
    stride = max(len(ms.sigmas) // steps, 1)
    picked += [float(sigma) for sigma in ms.sigmas[1::stride]]
    return torch.FloatTensor(picked[::-1])


def beta(ms: FlowModelSampling, steps: int, a: float = 0.6, b: float = 0.6) -> torch.Tensor:
    """Table entries at the quantiles of a Beta(a, b) (arXiv 2407.12173): dense at both ends for a, b < 1.

    Quantiles that round to the same entry as the one before are dropped, so it may give fewer steps.
    """
    last_index = len(ms.sigmas) - 1
    quantiles = 1 - np.linspace(0, 1, steps, endpoint=False)
    indices = np.rint(scipy.stats.beta.ppf(quantiles, a, b) * last_index)
    picked: list[float] = []
    previous = -1.0
    for index in indices:
        if index != previous:
            picked.append(float(ms.sigmas[int(index)]))
        previous = index
    return torch.FloatTensor([*picked, 0.0])


def linear_quadratic(ms: FlowModelSampling, steps: int, threshold_noise: float = 0.025) -> torch.Tensor:
    """Mochi's schedule: the first half of the steps linear down to 1 - threshold, the rest quadratic to 0."""
    if steps == 1:
        schedule = [1.0, 0.0]
    else:
        linear_steps = steps // 2
        linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
        threshold_step_diff = linear_steps - threshold_noise * steps
        quadratic_steps = steps - linear_steps
        quadratic_coef = threshold_step_diff / (linear_steps * quadratic_steps**2)
        linear_coef = threshold_noise / linear_steps - 2 * threshold_step_diff / (quadratic_steps**2)
        const = quadratic_coef * (linear_steps**2)
        quadratic = [quadratic_coef * (i**2) + linear_coef * i + const for i in range(linear_steps, steps)]
        schedule = [1.0 - x for x in [*linear, *quadratic, 1.0]]
    return torch.FloatTensor(schedule) * ms.sigma_max.cpu()


def kl_optimal(ms: FlowModelSampling, steps: int) -> torch.Tensor:
    """tan(a atan(sigma_min) + (1 - a) atan(sigma_max)), a evenly spaced in [0, 1] (AUTOMATIC1111 #15608)."""
    a = torch.arange(steps, dtype=torch.float).div_(steps - 1)
    sigmas = a.new_zeros(steps + 1)
    sigmas[:-1] = (a * math.atan(float(ms.sigma_min)) + (1 - a) * math.atan(float(ms.sigma_max))).tan_()
    return sigmas


SCHEDULERS: dict[str, Scheduler] = {
    "simple": simple,
    "sgm_uniform": sgm_uniform,
    "karras": karras,
    "exponential": exponential,
    "ddim_uniform": ddim_uniform,
    "beta": beta,
    "normal": normal,
    "linear_quadratic": linear_quadratic,
    "kl_optimal": kl_optimal,
}
"""By name, in ComfyUI's order (the order of the `scheduler` combo)."""

SCHEDULER_NAMES: list[str] = list(SCHEDULERS)


def calculate_sigmas(ms: FlowModelSampling, scheduler: str, steps: int) -> torch.Tensor:
    try:
        return SCHEDULERS[scheduler](ms, steps)
    except KeyError:
        raise ValueError(
            f"unknown scheduler {scheduler!r}; expected one of {', '.join(SCHEDULER_NAMES)}"
        ) from None


def denoised_sigmas(ms: FlowModelSampling, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """BasicScheduler's rule: denoise < 1 keeps the last steps + 1 sigmas of int(steps / denoise) steps."""
    total_steps = steps
    if denoise < 1.0:
        if denoise <= 0.0:
            return torch.FloatTensor([])
        total_steps = int(steps / denoise)
    return calculate_sigmas(ms, scheduler, total_steps)[-(steps + 1) :]
