"""Compositing nodes: pasting one image or latent onto another through a mask, and alpha in and out of
images, as ComfyUI declares them.

Pasting works on [B, C, H, W] for both: images at pixel positions, latents at 1/8 of the position
(x and y are given in pixels, so a latent moves in whole latent cells).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from engine.nodes.latent import LATENT_DOWNSCALE, MAX_RESOLUTION

Latent = dict[str, Any]


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """Tile (or cut) along dim 0 to `batch` (ComfyUI's repeat_to_batch_size)."""
    if tensor.shape[0] > batch:
        return tensor[:batch]
    if tensor.shape[0] < batch:
        repeats = math.ceil(batch / tensor.shape[0])
        return tensor.repeat(repeats, *([1] * (tensor.ndim - 1)))[:batch]
    return tensor


def resize_mask(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Any MASK as [B, 1, height, width], resized bilinearly."""
    planes = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float()
    return F.interpolate(planes, size=(height, width), mode="bilinear")


def paste(
    destination: torch.Tensor,
    source: torch.Tensor,
    x: int,
    y: int,
    mask: torch.Tensor | None,
    multiplier: int,
    resize_source: bool,
) -> torch.Tensor:
    """`source` blended into a copy of `destination` [B, C, H, W] at (x, y) // multiplier by `mask` (resized
    to the source; all ones when absent); the part past the destination's edges is dropped."""
    output = destination.clone()
    source = source.to(output.device)
    if resize_source:
        source = F.interpolate(source, size=tuple(output.shape[-2:]), mode="bilinear")
    source = repeat_to_batch(source, output.shape[0])
    left = min(x, output.shape[-1] * multiplier) // multiplier
    top = min(y, output.shape[-2] * multiplier) // multiplier
    width = min(source.shape[-1], output.shape[-1] - left)
    height = min(source.shape[-2], output.shape[-2] - top)
    if mask is None:
        weight = torch.ones_like(source)
    else:
        weight = repeat_to_batch(resize_mask(mask.to(output.device), *source.shape[-2:]), source.shape[0])
    weight = weight[..., :height, :width]
    region = output[..., top : top + height, left : left + width]
    output[..., top : top + height, left : left + width] = (
        weight * source[..., :height, :width] + (1.0 - weight) * region
    )
    return output


def match_alpha(destination: torch.Tensor, source: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The source takes the destination's channel count: an RGBA source pasted on RGB loses its alpha,
    an RGB source pasted on RGBA is made opaque (as ComfyUI's current image_alpha_fix does)."""
    if destination.shape[-1] < source.shape[-1]:
        return destination, source[..., : destination.shape[-1]]
    if destination.shape[-1] > source.shape[-1]:
        return destination, F.pad(source, (0, 1), value=1.0)
    return destination, source


class ImageCompositeMasked:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        position = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})
        return {
            "required": {
                "destination": ("IMAGE", {}),
                "source": ("IMAGE", {}),
                "x": position,
                "y": position,
                "resize_source": ("BOOLEAN", {"default": False}),
            },
            "optional": {"mask": ("MASK", {})},
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "composite"
    CATEGORY = "image"

    def composite(
        self,
        destination: torch.Tensor,
        source: torch.Tensor,
        x: int,
        y: int,
        resize_source: bool,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor]:
        destination, source = match_alpha(destination, source)
        pasted = paste(destination.movedim(-1, 1), source.movedim(-1, 1), x, y, mask, 1, resize_source)
        return (pasted.movedim(1, -1),)


class LatentCompositeMasked:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        position = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})
        return {
            "required": {
                "destination": ("LATENT", {}),
                "source": ("LATENT", {}),
                "x": position,
                "y": position,
                "resize_source": ("BOOLEAN", {"default": False}),
            },
            "optional": {"mask": ("MASK", {})},
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "composite"
    CATEGORY = "latent"

    def composite(
        self,
        destination: Latent,
        source: Latent,
        x: int,
        y: int,
        resize_source: bool,
        mask: torch.Tensor | None = None,
    ) -> tuple[Latent]:
        samples = paste(
            destination["samples"], source["samples"], x, y, mask, LATENT_DOWNSCALE, resize_source
        )
        return ({**destination, "samples": samples},)


class SplitImageWithAlpha:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("IMAGE", "MASK")
    FUNCTION = "split_image_with_alpha"
    CATEGORY = "mask/compositing"

    def split_image_with_alpha(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB, and the mask 1 - alpha (all zeros for an image without alpha)."""
        alpha = image[..., 3] if image.shape[-1] > 3 else torch.ones_like(image[..., 0])
        return image[..., :3].clone(), 1.0 - alpha


class JoinImageWithAlpha:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {}), "alpha": ("MASK", {})}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "join_image_with_alpha"
    CATEGORY = "mask/compositing"

    def join_image_with_alpha(self, image: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor]:
        """RGBA with alpha = 1 - mask (resized to the image); the batch is the shorter of the two."""
        opacity = 1.0 - resize_mask(alpha.to(image.device), image.shape[1], image.shape[2])[:, 0]
        batch = min(image.shape[0], opacity.shape[0])
        return (torch.cat([image[:batch, ..., :3], opacity[:batch, ..., None].to(image)], dim=-1),)


NODE_CLASS_MAPPINGS = {
    "ImageCompositeMasked": ImageCompositeMasked,
    "LatentCompositeMasked": LatentCompositeMasked,
    "SplitImageWithAlpha": SplitImageWithAlpha,
    "JoinImageWithAlpha": JoinImageWithAlpha,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SplitImageWithAlpha": "Split Image with Alpha",
    "JoinImageWithAlpha": "Join Image with Alpha",
}
