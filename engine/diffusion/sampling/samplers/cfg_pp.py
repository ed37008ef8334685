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
    """Ancestral Euler (a DDIM step with eta) whose noise estimate comes from the unguided x0."""
    noise = step_noise(x, extra_args, noise_sampler)
    ms = model.model_sampling
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        uncond = unguided(model)
        report(callback, i, x, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
            continue
        alpha_s = sigmas[i] * ms.half_log_snr(sigmas[i]).exp()
        alpha_t = sigmas[i + 1] * ms.half_log_snr(sigmas[i + 1]).exp()
        d = to_d(x, sigmas[i], alpha_s * uncond)
        sigma_down, sigma_up = ancestral_step(sigmas[i] / alpha_s, sigmas[i + 1] / alpha_t, eta=eta)
        x = alpha_t * denoised + alpha_t * sigma_down * d
        if eta > 0 and s_noise > 0:
            x = x + alpha_t * noise(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
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
    """DPM-Solver++(2S) from x shifted by the guidance, renoised with the variance-exploding ancestral split.

    That split is ComfyUI's for every model type in this sampler (unlike dpmpp_2s_ancestral's flow split).
    """
    noise = step_noise(x, extra_args, noise_sampler)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        uncond = unguided(model)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1], eta=eta)
        report(callback, i, x, sigmas[i], denoised)
        if sigma_down == 0:
            x = denoised + to_d(x, sigmas[i], uncond) * sigma_down
        else:
            t, t_next = sigmas[i].log().neg(), sigma_down.log().neg()
            h = t_next - t
            s = t + h / 2
            x_2 = (s.neg().exp() / t.neg().exp()) * (x + (denoised - uncond)) - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, s.neg().exp() * s_in)
            # As in ComfyUI, the shift now uses the unguided prediction at x_2, the latest evaluation.
            x = (t_next.neg().exp() / t.neg().exp()) * (x + (denoised - unguided(model))) - (
                -h
            ).expm1() * denoised_2
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
    """DPM-Solver++(2M) whose multistep history is the unguided x0."""
    s_in = x.new_ones([x.shape[0]])
    old_uncond = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        uncond = unguided(model)
        report(callback, i, x, sigmas[i], denoised)
        t, t_next = sigmas[i].log().neg(), sigmas[i + 1].log().neg()
        h = t_next - t
        mix = -torch.exp(-h) * uncond
        if old_uncond is not None and sigmas[i + 1] != 0:
            r = (t - sigmas[i - 1].log().neg()) / h
            mix = mix - torch.expm1(-h) * (1 / (2 * r)) * (denoised - old_uncond)
        x = denoised + mix + torch.exp(-h) * x
        old_uncond = uncond
    return x
