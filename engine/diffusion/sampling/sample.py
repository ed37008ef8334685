"""The two ways a graph samples: KSampler's (everything from names and numbers) and SamplerCustom's
(noise, guider, sampler and sigmas built by other nodes). LATENT dicts in, LATENT dicts out.

KSampler's own rules, beyond the scheduler's sigmas:
- dpm_2, dpm_2_ancestral, uni_pc and uni_pc_bh2 get the schedule of steps + 1 with its penultimate
  sigma dropped: as many steps, but the last one from a higher sigma to 0;
- denoise < 1 keeps the last steps + 1 sigmas of a schedule of int(steps / denoise) steps;
- KSamplerAdvanced's start/end steps cut that schedule, and its end is forced to 0 unless the
  leftover noise is to be returned.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from engine.diffusion.protocols import DiffusionModel
from engine.diffusion.sampling.guiders import CFGGuider
from engine.diffusion.sampling.model_sampling import FlowModelSampling
from engine.diffusion.sampling.noise import prepare_noise
from engine.diffusion.sampling.preview import StepReporter
from engine.diffusion.sampling.sampler import ProgressCallback, Sampler, sampler_object
from engine.diffusion.sampling.schedulers import calculate_sigmas
from engine.progress import throw_if_interrupted

Latent = dict[str, Any]
"""ComfyUI's LATENT: {"samples": [B, C, h, w] VAE latent, "batch_index"?: [...], "noise_mask"?: mask}."""

DISCARD_PENULTIMATE_SIGMA_SAMPLERS = frozenset({"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"})


class NoiseSource(Protocol):
    """The NOISE graph value: initial noise for a latent, and the seed of the run's per-step noise."""

    @property
    def seed(self) -> int: ...

    def generate_noise(self, latent: Latent) -> torch.Tensor: ...


class Guider(Protocol):
    """The GUIDER graph value."""

    model: DiffusionModel

    def sample(
        self,
        noise: torch.Tensor,
        latent_image: torch.Tensor,
        sampler: Sampler,
        sigmas: torch.Tensor,
        denoise_mask: torch.Tensor | None = None,
        callback: ProgressCallback | None = None,
        seed: int | None = None,
    ) -> torch.Tensor: ...


def ksampler_sigmas(
    ms: FlowModelSampling, sampler_name: str, scheduler: str, steps: int, denoise: float | None = 1.0
) -> torch.Tensor:
    def schedule(n: int) -> torch.Tensor:
        if sampler_name not in DISCARD_PENULTIMATE_SIGMA_SAMPLERS:
            return calculate_sigmas(ms, scheduler, n)
        sigmas = calculate_sigmas(ms, scheduler, n + 1)
        return torch.cat([sigmas[:-2], sigmas[-1:]])

    if denoise is None or denoise > 0.9999:
        return schedule(steps)
    if denoise <= 0.0:
        return torch.FloatTensor([])
    return schedule(int(steps / denoise))[-(steps + 1) :]


def step_range(
    sigmas: torch.Tensor, start_step: int | None, last_step: int | None, force_full_denoise: bool
) -> torch.Tensor | None:
    """KSamplerAdvanced's window on the schedule; None when it starts at or past the end (nothing to do)."""
    if last_step is not None and last_step < len(sigmas) - 1:
        sigmas = sigmas[: last_step + 1].clone()
        if force_full_denoise:
            sigmas[-1] = 0
    if start_step is not None:
        if start_step >= len(sigmas) - 1:
            return None
        sigmas = sigmas[start_step:]
    return sigmas


def fix_empty_latent_channels(model: DiffusionModel, latent: torch.Tensor) -> torch.Tensor:
    """An empty (all-zero) latent made for another VAE gets the model's channel count, so 4-channel
    EmptyLatentImage works with Flux as it does in ComfyUI."""
    channels = model.latent_format.channels
    if latent.shape[1] != channels and torch.count_nonzero(latent) == 0:
        return latent.new_zeros((latent.shape[0], channels, *latent.shape[2:]))
    return latent


def ksample(
    model: DiffusionModel,
    seed: int,
    steps: int,
    cfg: float,
    sampler_name: str,
    scheduler: str,
    positive: Any,
    negative: Any,
    latent: Latent,
    denoise: float = 1.0,
    disable_noise: bool = False,
    start_step: int | None = None,
    last_step: int | None = None,
    force_full_denoise: bool = False,
) -> Latent:
    """KSampler and KSamplerAdvanced."""
    throw_if_interrupted()
    samples = fix_empty_latent_channels(model, latent["samples"])
    if disable_noise:
        noise = torch.zeros(samples.shape, dtype=samples.dtype, device="cpu")
    else:
        noise = prepare_noise(samples, seed, latent.get("batch_index"))
    sigmas = ksampler_sigmas(model.model_sampling, sampler_name, scheduler, steps, denoise)
    window = step_range(sigmas, start_step, last_step, force_full_denoise)
    if window is None:
        return {**latent, "samples": samples}
    guider = CFGGuider(model, positive, negative, cfg)
    reporter = StepReporter(model.latent_format, steps)
    result = guider.sample(
        noise,
        samples,
        sampler_object(sampler_name),
        window,
        denoise_mask=latent.get("noise_mask"),
        callback=reporter,
        seed=seed,
    )
    return {**latent, "samples": result}


def sample_custom(
    noise: NoiseSource, guider: Guider, sampler: Sampler, sigmas: torch.Tensor, latent: Latent
) -> tuple[Latent, Latent]:
    """SamplerCustomAdvanced (and SamplerCustom): the sampled latent and the last step's x0 estimate."""
    throw_if_interrupted()
    latent = {**latent, "samples": fix_empty_latent_channels(guider.model, latent["samples"])}
    reporter = StepReporter(guider.model.latent_format, sigmas.shape[-1] - 1)
    result = guider.sample(
        noise.generate_noise(latent),
        latent["samples"],
        sampler,
        sigmas,
        denoise_mask=latent.get("noise_mask"),
        callback=reporter,
        seed=noise.seed,
    )
    out = {**latent, "samples": result}
    if reporter.x0 is None:
        return out, out
    return out, {**latent, "samples": guider.model.latent_format.process_out(reporter.x0.float()).cpu()}
