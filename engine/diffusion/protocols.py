"""The contract between the samplers and the loaded diffusion models (the MODEL value of a graph)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch

from engine.diffusion.latent_formats import LatentFormat
from engine.diffusion.sampling.model_sampling import FlowModelSampling

Conditioning = list[list[Any]]
"""ComfyUI's CONDITIONING: a list of [tensor [B, T, D], {"pooled_output": ..., "guidance": ..., ...}]."""


@dataclass(frozen=True)
class ModelInputs:
    """What one forward of a diffusion model receives besides the latent and sigma, batched like x."""

    context: torch.Tensor
    """[B, T, D] text-token states (T5-XXL for Flux, Pile-T5-XL for AuraFlow)."""
    pooled: torch.Tensor | None = None
    """[B, P] pooled text vector (CLIP-L for Flux); None where the model takes none."""
    guidance: torch.Tensor | None = None
    """[B] distilled guidance strength (Flux dev); None means the model's default."""
    concat_image: torch.Tensor | None = None
    """[B, C, h, w] VAE latent (not yet shifted into model space) of an image the model reads beside the
    noisy latent, at the latent's size: Fill's masked image, Canny's or Depth's control image."""
    concat_mask: torch.Tensor | None = None
    """[B, 1, 8h, 8w] inpainting mask at pixel size (1 = repaint), for models that read one (Flux Fill)."""
    reference_latents: tuple[torch.Tensor, ...] = ()
    """[B, C, H, W] VAE latents of reference images (Flux Kontext), each of its own size."""
    reference_method: str = "offset"
    """Where reference tokens go: "offset", "index", "uxo" or "index_timestep_zero" (placed as "index",
    modulated as at timestep 0) (FluxKontextMultiReferenceLatentMethod)."""
    text_prefix: torch.Tensor | None = None
    """[1 or B, N, width] tokens the model puts before the text tokens once it has projected those to its
    own width (USO's style tokens, set by USOStyleReference on the MODEL, not by the conditioning)."""

    def to(self, device: torch.device, dtype: torch.dtype) -> ModelInputs:
        """These inputs on `device`, floating-point ones in `dtype` (guidance stays float32)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype)

        return ModelInputs(
            context=self.context.to(device=device, dtype=dtype),
            pooled=move(self.pooled),
            guidance=None if self.guidance is None else self.guidance.to(device=device, dtype=torch.float32),
            concat_image=move(self.concat_image),
            concat_mask=move(self.concat_mask),
            reference_latents=tuple(r.to(device=device, dtype=dtype) for r in self.reference_latents),
            reference_method=self.reference_method,
            text_prefix=move(self.text_prefix),
        )


class DenoiseMaskFunction(Protocol):
    """A MODEL patch that reshapes an inpainting mask for each step (ComfyUI's denoise_mask_function):
    (step sigma [B], the latent-sized mask, the model's sampling, the run's sigmas) -> the mask to use."""

    def __call__(
        self, sigma: torch.Tensor, mask: torch.Tensor, model_sampling: FlowModelSampling, sigmas: torch.Tensor
    ) -> torch.Tensor: ...


class DiffusionModel(Protocol):
    """A loaded diffusion model as nodes pass it around (ComfyUI's MODEL).

    Cloning is cheap and shares the weights; a clone may carry another `model_sampling`
    (that is how ModelSamplingAuraFlow / ModelSamplingFlux change the shift).
    """

    model_sampling: FlowModelSampling
    latent_format: LatentFormat
    denoise_mask_function: DenoiseMaskFunction | None
    """Set by DifferentialDiffusion; None: the noise mask is used as given at every step."""

    @property
    def device(self) -> torch.device: ...

    def clone(self) -> DiffusionModel: ...

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        """The model's raw prediction (a flow velocity) for x [B,C,h,w] in model latent space at sigma [B].

        Takes and returns float32 on `device`; computes in the model's own dtype; makes the weights
        resident first (the model manager may have evicted them).
        """
        ...
