"""Per-step progress for the service: a step count, an interrupt check and a cheap RGB preview.

The preview maps the first image's x0 estimate through the latent format's linear RGB factors (one
small matrix product, no VAE) to an image at latent resolution (1024 px -> 128 px), like ComfyUI's
"latent2rgb" previews.
"""

from __future__ import annotations

import torch
from PIL import Image

from engine.diffusion.latent_formats import LatentFormat
from engine.progress import ProgressBar, throw_if_interrupted


class LatentPreviewer:
    def __init__(self, latent_format: LatentFormat) -> None:
        self.factors = None
        if latent_format.rgb_factors:
            self.factors = torch.tensor(latent_format.rgb_factors, dtype=torch.float32).T.contiguous()
        self.bias = torch.tensor(latent_format.rgb_bias, dtype=torch.float32).reshape(3, 1)

    def preview(self, x0: torch.Tensor) -> Image.Image | None:
        """The first image of a model-space x0 batch as an RGB image, or None for a format without factors."""
        if self.factors is None:
            return None
        first = x0[0].detach().to(device="cpu", dtype=torch.float32)
        channels, height, width = first.shape
        rgb = torch.addmm(self.bias, self.factors, first.reshape(channels, height * width))
        pixels = ((rgb + 1.0) / 2.0).clamp(0, 1).mul(0xFF).to(torch.uint8)
        return Image.fromarray(pixels.T.reshape(height, width, 3).numpy())


class StepReporter:
    """The sampling callback the nodes pass: reports each step with a preview and keeps the latest x0.

    The x0 it keeps is what SamplerCustom(Advanced) return as `denoised_output`.
    """

    def __init__(self, latent_format: LatentFormat, total_steps: int) -> None:
        self.previewer = LatentPreviewer(latent_format)
        self.bar = ProgressBar(total_steps)
        self.x0: torch.Tensor | None = None

    def __call__(self, step: int, x0: torch.Tensor, x: torch.Tensor, total_steps: int) -> None:
        throw_if_interrupted()
        self.x0 = x0
        self.bar.update_absolute(step + 1, total_steps, self.previewer.preview(x0))
