"""CFG++ samplers (Chung et al. 2024): step along the unguided prediction, land on the guided one.

Plain CFG both renoises and denoises with the guided x0; CFG++ takes the noise direction from the
unguided (negative-prompt) x0, which keeps guided sampling on the data manifold at low cfg (about
0.5 to 2 here, rather than 5 to 10). The guider exposes that x0 as `model.uncond_denoised`, and
evaluates the negative prompt even at cfg 1 for these samplers.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.diffusion.sampling.noise import NoiseSampler
from engine.diffusion.sampling.samplers.common import (
    Denoiser,
    StepCallback,
    ancestral_step,
    first_order_exponential_step,
    log_time,
    report,
    step_noise,
    to_d,
)
from engine.diffusion.sampling.samplers.registry import register


def unguided(model: Denoiser) -> torch.Tensor:
    uncond = model.uncond_denoised
    if uncond is None:
        raise RuntimeError("a cfg++ sampler needs a guider that exposes its unguided prediction")
    return uncond


def _alpha(model: Denoiser, sigma: torch.Tensor) -> torch.Tensor:
    """The signal scale alpha = sigma e^lambda, from the half-log-SNR lambda = log(alpha / sigma)."""
    return sigma * model.model_sampling.half_log_snr(sigma).exp()


@register("euler_ancestral_cfg_pp", needs_uncond=True)
def sample_euler_ancestral_cfg_pp(
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
    """CFG++'s DDIM step (Chung et al. 2024, arXiv 2406.08070, Algorithm 1) with eta:
        x_next = alpha_next (x0 + sigma_down eps_u + s_noise sigma_up z),   eps_u = (x - alpha x0_u) / sigma,
    x0 guided, x0_u unguided, and (sigma_down, sigma_up) the ancestral split of the noise-to-signal
    ratios sigma / alpha to sigma_next / alpha_next. Eta 0 gives alpha_next x0 + sigma_next eps_u.
    """
    noise = step_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i] * s_in)
        x0_u = unguided(model)
        report(callback, i, x, sigmas[i], x0)
        if sigmas[i + 1] == 0:
            x = x0
            continue
        alpha, alpha_next = _alpha(model, sigmas[i]), _alpha(model, sigmas[i + 1])
        eps_u = to_d(x, sigmas[i], alpha * x0_u)
        sigma_down, sigma_up = ancestral_step(sigmas[i] / alpha, sigmas[i + 1] / alpha_next, eta=eta)
        x = alpha_next * x0 + alpha_next * sigma_down * eps_u
        if eta > 0 and s_noise > 0:
            x = x + alpha_next * noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@register("euler_cfg_pp", needs_uncond=True)
def sample_euler_cfg_pp(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """Euler with CFG++: the deterministic (eta 0) case of euler_ancestral_cfg_pp."""
    return sample_euler_ancestral_cfg_pp(
        model, x, sigmas, extra_args, callback, disable, eta=0.0, s_noise=0.0
    )


@register("dpmpp_2s_ancestral_cfg_pp", needs_uncond=True)
def sample_dpmpp_2s_ancestral_cfg_pp(
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
    """DPM-Solver++(2S) (Lu et al. 2022, arXiv 2211.01095, Algorithm 1) with CFG++, in t = -log sigma.

    Both of its first-order steps (`first_order_exponential_step`) start from x moved by the guidance,
    x + (x0 - x0_u): to the midpoint s = t + h/2 on x0, giving x_2, then over the whole h to sigma_down
    on x0(x_2). It then renoises by sigma_up of the variance-exploding ancestral split, which is
    ComfyUI's for every model type in this sampler (unlike dpmpp_2s_ancestral's flow split).
    """
    noise = step_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i] * s_in)
        x0_u = unguided(model)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(callback, i, x, sigmas[i], x0)
        if sigma_down == 0:
            x = x0 + to_d(x, sigmas[i], x0_u) * sigma_down
        else:
            t, t_next = log_time(sigmas[i]), log_time(sigma_down)
            h = t_next - t
            s = t + h / 2
            x_2 = first_order_exponential_step(x + (x0 - x0_u), t, s, h / 2, x0)
            x0_2 = model(x_2, s.neg().exp() * s_in)
            # As in ComfyUI, the shift now uses the unguided prediction at x_2, the latest evaluation.
            x = first_order_exponential_step(x + (x0 - unguided(model)), t, t_next, h, x0_2)
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@register("dpmpp_2m_cfg_pp", needs_uncond=True)
def sample_dpmpp_2m_cfg_pp(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: dict[str, Any] | None = None,
    callback: StepCallback | None = None,
    disable: bool | None = None,
) -> torch.Tensor:
    """DPM-Solver++(2M) (arXiv 2211.01095, Algorithm 2) with CFG++, in t = -log sigma:
        x_(i+1) = x0 + e^-h (x - x0_u) - (e^-h - 1) / 2r (x0 - x0_u,(i-1)),   r = h_(i-1) / h,
    landing on the guided x0 with the unguided noise; the second-order term is dropped on the first
    step and into sigma 0. With x0_u = x0 it is dpmpp_2m.
    """
    s_in = x.new_ones([x.shape[0]])
    previous_x0_u = None
    for i in range(len(sigmas) - 1):
        x0 = model(x, sigmas[i] * s_in)
        x0_u = unguided(model)
        report(callback, i, x, sigmas[i], x0)
        t, t_next = log_time(sigmas[i]), log_time(sigmas[i + 1])
        h = t_next - t
        step = -torch.exp(-h) * x0_u
        if previous_x0_u is not None and sigmas[i + 1] != 0:
            r = (t - log_time(sigmas[i - 1])) / h
            step = step - torch.expm1(-h) * (1 / (2 * r)) * (x0 - previous_x0_u)
        x = x0 + step + torch.exp(-h) * x
        previous_x0_u = x0_u
    return x
