"""GUIDER values (CFGGuider, BasicGuider) and the guided denoiser a sampler drives.

Classifier-free guidance combines clean-latent (x0) predictions: uncond + (cond - uncond) * cfg.
The negative prompt is skipped at cfg 1.0 (the result is the positive prediction either way),
except for cfg++ samplers, which step along the negative prediction itself. A guider without a
negative prompt (BasicGuider) reports a zero negative prediction, as ComfyUI does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from engine.diffusion.protocols import DiffusionModel
from engine.diffusion.sampling.conditioning import (
    CondEntry,
    Conditioning,
    WeightedSum,
    cond_entries,
    pair_areas,
    plan_forwards,
)
from engine.diffusion.sampling.sampler import ProgressCallback, Sampler
from engine.progress import throw_if_interrupted

POSITIVE, NEGATIVE = 0, 1


class GuidedDenoiser:
    """One sampling run's x0 predictor: every active conditioning entry through the model (on its crop of
    the latent), each prompt's predictions averaged cell by cell by the entries' weights, then CFG.

    The forwards (which entries share a batch, their concatenated inputs) are planned once per run,
    or per call when an entry is limited to part of the schedule. The positive and negative prompt share
    a batch when their shapes agree, unless the model says otherwise (its `batch_cfg`, from
    PerformanceSettings: one forward per prompt takes less activation memory). Checks for an interrupt
    before each evaluation, so adaptive samplers stop promptly too.
    """

    def __init__(
        self,
        model: DiffusionModel,
        entries: list[CondEntry],
        cfg: float,
        has_negative: bool,
        keep_uncond: bool,
    ) -> None:
        self.model = model
        self.model_sampling = model.model_sampling
        self.cfg = cfg
        self.keep_uncond = keep_uncond
        run_negative = has_negative and (keep_uncond or not math.isclose(cfg, 1.0))
        self.entries = [entry for entry in entries if entry.slot == POSITIVE or run_negative]
        self.batch_prompts = bool(getattr(model, "batch_cfg", True))
        ranged = any(e.sigma_start is not None or e.sigma_end is not None for e in self.entries)
        self.forwards = None if ranged else plan_forwards(self.entries, self.batch_prompts)
        self._uncond: torch.Tensor | None = None

    @property
    def uncond_denoised(self) -> torch.Tensor | None:
        return self._uncond

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        throw_if_interrupted()
        forwards = self.forwards
        if forwards is None:
            active = [e for e in self.entries if e.active_at(float(sigma[0]))]
            forwards = plan_forwards(active, self.batch_prompts)
        sums: list[WeightedSum | None] = [None, None]
        for forward in forwards:
            n = len(forward.entries)
            x_in = (
                torch.cat([entry.crop(x) for entry in forward.entries])
                if n > 1
                else forward.entries[0].crop(x)
            )
            sigma_in = sigma if n == 1 else torch.cat([sigma] * n)
            velocity = self.model.apply_model(x_in, sigma_in, forward.inputs)
            denoised = self.model_sampling.calculate_denoised(sigma_in, velocity, x_in)
            for entry, chunk in zip(forward.entries, denoised.chunk(n), strict=True):
                total = sums[entry.slot]
                if total is None:
                    total = sums[entry.slot] = WeightedSum(x)
                total.add(entry, chunk)
        cond, uncond = (None if total is None else total.mean() for total in sums)
        if self.keep_uncond:
            self._uncond = uncond if uncond is not None else torch.zeros_like(x)
        if cond is None:
            cond = torch.zeros_like(x)
        if uncond is None:
            return cond if self.cfg == 1.0 else cond * self.cfg
        return uncond + (cond - uncond) * self.cfg


class CFGGuider:
    """The GUIDER of a CFGGuider node: positive and negative conditioning at a CFG scale."""

    def __init__(
        self,
        model: DiffusionModel,
        positive: Conditioning,
        negative: Conditioning | None = None,
        cfg: float = 1.0,
    ) -> None:
        self.model = model
        self.positive = positive
        self.negative = negative
        self.cfg = cfg

    def denoiser(
        self, shape: Sequence[int], keep_uncond: bool, denoise_mask: torch.Tensor | None = None
    ) -> GuidedDenoiser:
        """The denoiser for latents of `shape` [B, C, h, w] (areas and masks are resolved against it;
        `denoise_mask` is the sampler's, which an inpainting model reads when no concat mask is given)."""
        device, ms = self.model.device, self.model.model_sampling
        entries = cond_entries(self.positive, POSITIVE, shape, device, ms, denoise_mask)
        if self.negative is not None:
            negative = cond_entries(self.negative, NEGATIVE, shape, device, ms, denoise_mask)
            pair_areas(entries, negative)
            entries += negative
        return GuidedDenoiser(self.model, entries, self.cfg, self.negative is not None, keep_uncond)

    def sample(
        self,
        noise: torch.Tensor,
        latent_image: torch.Tensor,
        sampler: Sampler,
        sigmas: torch.Tensor,
        denoise_mask: torch.Tensor | None = None,
        callback: ProgressCallback | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Denoise `latent_image` (a VAE latent) from `noise` along `sigmas`; returns a VAE latent on the CPU.

        An all-zero latent (an empty image) is not shifted into model space: ComfyUI keeps it at zero,
        which for Flux is not the same as the shifted zero. With a noise mask, the cells the mask
        leaves at 0 come back as the input latent itself (the sampler lands there up to rounding;
        the process_in/process_out round trip and the last step's arithmetic are not exact).
        """
        if sigmas.numel() == 0:
            return latent_image
        device, latent_format = self.model.device, self.model.latent_format
        with torch.no_grad():
            latent = latent_image.to(device=device, dtype=torch.float32)
            if torch.count_nonzero(latent) > 0:
                latent = latent_format.process_in(latent)
            noise = noise.to(device=device, dtype=torch.float32)
            mask = None if denoise_mask is None else prepare_mask(denoise_mask, noise.shape, device)
            samples = sampler.sample(
                self.denoiser(noise.shape, sampler.needs_uncond, mask),
                sigmas.to(device),
                noise,
                latent,
                denoise_mask=mask,
                mask_function=self.model.denoise_mask_function,
                callback=callback,
                seed=seed,
            )
            result = latent_format.process_out(samples.float()).cpu()
            if mask is not None:
                result = torch.where(
                    mask.cpu() == 0, latent_image.to(device="cpu", dtype=result.dtype), result
                )
            return result


class BasicGuider(CFGGuider):
    """The GUIDER of a BasicGuider node: one conditioning, no CFG (distilled models such as Flux)."""

    def __init__(self, model: DiffusionModel, conditioning: Conditioning) -> None:
        super().__init__(model, conditioning)


def prepare_mask(mask: torch.Tensor, shape: torch.Size, device: torch.device) -> torch.Tensor:
    """A LATENT noise_mask ([B or 1, 1, H, W] at any size) resized bilinearly to the latent, per channel."""
    resized = torch.nn.functional.interpolate(
        mask.reshape((-1, 1, mask.shape[-2], mask.shape[-1])).float(), size=tuple(shape[2:]), mode="bilinear"
    )
    if resized.shape[1] < shape[1]:
        resized = resized.repeat(1, shape[1], 1, 1)[:, : shape[1]]
    if resized.shape[0] < shape[0]:
        resized = resized.repeat(math.ceil(shape[0] / resized.shape[0]), 1, 1, 1)
    return resized[: shape[0]].to(device)
