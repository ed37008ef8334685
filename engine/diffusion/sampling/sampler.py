"""The SAMPLER graph value: a sampler function plus what runs around it (ComfyUI's KSAMPLER).

Around the function: the start latent is noised to the first sigma; with a noise mask the
masked-out region is pinned to the input latent (re-noised to each step's sigma on the way in,
the input itself in each x0 prediction, so the last step lands on it; the guider then restores
it exactly); each step is reported; and the result is un-scaled from the last sigma (a flow
latent at sigma s is divided by 1 - s, the identity at 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from engine.diffusion.protocols import DenoiseMaskFunction
from engine.diffusion.sampling.model_sampling import FlowModelSampling
from engine.diffusion.sampling.noise import prepare_noise
from engine.diffusion.sampling.samplers import SAMPLERS, Denoiser, SamplerSpec, StepInfo


class ProgressCallback(Protocol):
    """ComfyUI's sampling callback: (step index, x0 estimate, current x, total steps)."""

    def __call__(self, step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None: ...


class MaskedDenoiser:
    """Inpainting: only where mask is 1 is the model's prediction used; elsewhere the input latent is kept.

    The model sees, outside the mask, the input latent noised to the step's sigma with the run's
    noise ((1 - sigma) * latent + sigma * noise for a flow model). A `mask_function`
    (DifferentialDiffusion) replaces the mask at each step.
    """

    def __init__(
        self,
        inner: Denoiser,
        mask: torch.Tensor,
        latent: torch.Tensor,
        noise: torch.Tensor,
        sigmas: torch.Tensor,
        mask_function: DenoiseMaskFunction | None = None,
    ) -> None:
        self.inner = inner
        self.mask = mask
        self.latent = latent
        self.noise = noise
        self.sigmas = sigmas
        self.mask_function = mask_function
        self.model_sampling: FlowModelSampling = inner.model_sampling

    @property
    def uncond_denoised(self) -> torch.Tensor | None:
        return self.inner.uncond_denoised

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        mask = self.mask
        if self.mask_function is not None:
            mask = self.mask_function(sigma, mask, self.model_sampling, self.sigmas)
        keep = 1.0 - mask
        noised_latent = self.model_sampling.noise_scaling(sigma, self.noise, self.latent)
        denoised = self.inner(x * mask + noised_latent * keep, sigma)
        return denoised * mask + self.latent * keep


@dataclass(frozen=True, eq=False)
class Sampler:
    """A named sampler with fixed options, ready to run over a guided denoiser. Compared by identity."""

    name: str
    spec: SamplerSpec
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def needs_uncond(self) -> bool:
        return self.spec.needs_uncond

    def sample(
        self,
        denoiser: Denoiser,
        sigmas: torch.Tensor,
        noise: torch.Tensor,
        latent_image: torch.Tensor,
        *,
        denoise_mask: torch.Tensor | None = None,
        mask_function: DenoiseMaskFunction | None = None,
        callback: ProgressCallback | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Noise, latent and result in the model's latent space, on the model's device."""
        ms = denoiser.model_sampling
        model: Denoiser = denoiser
        if denoise_mask is not None:
            inpaint_noise = noise
            if self.spec.fresh_inpaint_noise:
                inpaint_seed = 42 if seed is None else seed + 1
                inpaint_noise = prepare_noise(noise, inpaint_seed).to(noise)
            model = MaskedDenoiser(denoiser, denoise_mask, latent_image, inpaint_noise, sigmas, mask_function)
        x = ms.noise_scaling(sigmas[0], noise, latent_image)

        step_callback = None
        if callback is not None:
            total_steps = len(sigmas) - 1

            def step_callback(info: StepInfo) -> None:
                callback(info["i"], info["denoised"], info["x"], total_steps)

        samples = self.spec.function(model, x, sigmas, {"seed": seed}, step_callback, None, **self.options)
        final_sigma = sigmas[-1]
        if final_sigma == 0 and self.spec.final_sigma is not None:
            final_sigma = sigmas.new_tensor(self.spec.final_sigma)
        return ms.inverse_noise_scaling(final_sigma, samples)


def sampler_object(name: str, **options: Any) -> Sampler:
    """The SAMPLER that KSamplerSelect returns for a sampler name (options as the Sampler* nodes set them)."""
    try:
        spec = SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}") from None
    return Sampler(name, spec, dict(options))
