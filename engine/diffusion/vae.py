"""The VAE value of a graph: turns images into VAE latents and back, one image of a batch at a time.

Latents here are the VAE's own (what LATENT carries); scaling into a diffusion model's space is the
model's business (`latent_formats`). Images are ComfyUI's IMAGE: float [B, H, W, C] in 0..1 on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

# The defining module, not `diffusers`: under TYPE_CHECKING its __init__ also binds the name to a
# placeholder class (utils.dummy_pt_objects) that a type checker takes for the real one.
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

from engine.diffusion.autoencoder import AutoencoderConfig
from engine.diffusion.model_manager import ModelKey, ModelManager
from engine.diffusion.safetensors_file import load_tensors
from engine.diffusion.tiling import tile_count, tiled_apply
from engine.diffusion.weights import instantiate
from engine.progress import ProgressBar, throw_if_interrupted


class LatentShapeError(ValueError):
    """A latent this VAE cannot decode (wrong channel count: a latent made for another model family)."""


class VAE:
    def __init__(self, path: Path, prefix: str, config: AutoencoderConfig, manager: ModelManager) -> None:
        self.path = path
        self.prefix = prefix
        self.config = config
        self.manager = manager
        self.key = ModelKey.for_file(path, f"vae:{prefix}", dtype=str(manager.dtype))

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    @property
    def downscale_ratio(self) -> int:
        return self.config.downscale_ratio

    def module(self) -> AutoencoderKL:
        """The resident autoencoder, loading it first if it is not."""
        return self.manager.load(self.key, self._build)

    def _build(self) -> AutoencoderKL:
        tensors = load_tensors(self.path, self.prefix, self.manager.device)
        return instantiate(
            f"{self.path.name} ({self.config.name})",
            self.config.create_module,
            self.config.to_diffusers(tensors),
            self.manager.dtype,
        )

    def _check_latent(self, latent: torch.Tensor) -> None:
        if latent.ndim != 4 or latent.shape[1] != self.latent_channels:
            raise LatentShapeError(
                f"this VAE decodes {self.latent_channels}-channel latents; got shape {tuple(latent.shape)} "
                "(a latent made for another model family?)"
            )

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """VAE latents [B, C, h, w] -> IMAGE [B, h*8, w*8, 3], clamp((x + 1) / 2)."""
        self._check_latent(latent)
        module = self.module()
        images = []
        progress = ProgressBar(latent.shape[0])
        with self.manager.out_of_memory_guard("decoding with the VAE"), torch.no_grad():
            for sample in latent.split(1):
                throw_if_interrupted()
                pixels = module.decode(sample.to(self.manager.device, self.manager.dtype), return_dict=False)[
                    0
                ]
                images.append(((pixels.float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu())
                progress.update(1)
        return torch.cat(images)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE [B, H, W, C] -> VAE latents [B, C', H/8, W/8] (the distribution's mean, as ComfyUI takes it).

        An image whose sides are not multiples of 8 loses the remainder, half from each edge.
        """
        pixels = crop_to_multiple(pixels[..., :3], self.downscale_ratio)
        module = self.module()
        latents = []
        progress = ProgressBar(pixels.shape[0])
        with self.manager.out_of_memory_guard("encoding with the VAE"), torch.no_grad():
            for image in pixels.split(1):
                throw_if_interrupted()
                x = image.movedim(-1, 1).to(self.manager.device, self.manager.dtype) * 2.0 - 1.0
                latents.append(module.encode(x, return_dict=False)[0].mode().float().cpu())
                progress.update(1)
        return torch.cat(latents)

    def decode_tiled(self, latent: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
        """Like `decode`, over tiles of `tile` latent cells overlapping by `overlap` (ComfyUI's decode_tiled):
        three passes, with tiles twice as tall and half as wide, half as tall and twice as wide, then
        square, averaged so that one pass's seams fall inside another's tiles."""
        self._check_latent(latent)
        module = self.module()

        def decode_tile(piece: torch.Tensor) -> torch.Tensor:
            throw_if_interrupted()
            return module.decode(piece.to(self.manager.device, self.manager.dtype), return_dict=False)[0]

        shapes = [(tile * 2, tile // 2), (tile // 2, tile * 2), (tile, tile)]
        raw = self._tiled(latent, decode_tile, shapes, overlap, self.downscale_ratio, 3, "decoding")
        return ((raw + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1)

    def encode_tiled(self, pixels: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
        """Like `encode`, over tiles of `tile` pixels overlapping by `overlap` (ComfyUI's encode_tiled): the
        square tiles, then wide, then tall ones, averaged."""
        pixels = crop_to_multiple(pixels[..., :3], self.downscale_ratio).movedim(-1, 1) * 2.0 - 1.0
        module = self.module()

        def encode_tile(piece: torch.Tensor) -> torch.Tensor:
            throw_if_interrupted()
            x = piece.to(self.manager.device, self.manager.dtype)
            return module.encode(x, return_dict=False)[0].mode()

        shapes = [(tile, tile), (tile // 2, tile * 2), (tile * 2, tile // 2)]
        return self._tiled(
            pixels, encode_tile, shapes, overlap, 1 / self.downscale_ratio, self.latent_channels, "encoding"
        )

    def _tiled(
        self,
        samples: torch.Tensor,
        function: Callable[[torch.Tensor], torch.Tensor],
        shapes: list[tuple[int, int]],
        overlap: int,
        scale: float,
        out_channels: int,
        doing: str,
    ) -> torch.Tensor:
        """The mean of `tiled_apply` over tile `shapes` (height, width), summed in that order (as ComfyUI)."""
        height, width = samples.shape[-2:]
        steps = samples.shape[0] * sum(tile_count(height, width, shape, overlap) for shape in shapes)
        progress = ProgressBar(steps)

        def step() -> None:
            progress.update(1)

        with self.manager.out_of_memory_guard(f"{doing} with the VAE in tiles"), torch.no_grad():
            parts = [
                tiled_apply(samples, function, shape, overlap, scale, out_channels, step) for shape in shapes
            ]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total / len(parts)


def crop_to_multiple(pixels: torch.Tensor, multiple: int) -> torch.Tensor:
    """The centred crop of IMAGE [B, H, W, C] whose sides are multiples of `multiple`."""
    height, width = pixels.shape[1] // multiple * multiple, pixels.shape[2] // multiple * multiple
    top, left = (pixels.shape[1] % multiple) // 2, (pixels.shape[2] % multiple) // 2
    return pixels[:, top : top + height, left : left + width]
