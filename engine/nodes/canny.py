"""The Canny edge detector node, with kornia's algorithm (what ComfyUI's node calls) in plain torch.

Steps, each as kornia.filters.canny does it: grey from RGB (ITU-R 601 weights), a 5x5 Gaussian blur
(sigma 1, reflected borders), Sobel gradients (unnormalised, replicated borders), magnitude
sqrt(gx^2 + gy^2 + 1e-6), non-maximum suppression along the gradient direction rounded to 45 degrees
(strictly greater than both neighbours, zero beyond the border), two thresholds, and hysteresis: weak
pixels (above low) are kept only when 8-connected through weak pixels to a strong one (above high).
The thresholds apply to the raw Sobel magnitude of a 0..1 image, as in ComfyUI.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

GREY_WEIGHTS = (0.299, 0.587, 0.114)
BLUR_SIZE = 5
BLUR_SIGMA = 1.0
EPS = 1e-6

NEIGHBOURS = ((0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1), (-1, 0), (-1, 1))
"""(dy, dx) of the neighbour in each gradient direction k * 45 degrees (y grows downwards, as in atan2(gy,
gx) of the image); the opposite direction is k + 4."""


def _gaussian_blur(images: torch.Tensor) -> torch.Tensor:
    offsets = torch.arange(BLUR_SIZE, dtype=images.dtype, device=images.device) - BLUR_SIZE // 2
    weights = torch.exp(-(offsets**2) / (2 * BLUR_SIGMA**2))
    weights = weights / weights.sum()
    pad = BLUR_SIZE // 2
    planes = images.reshape(-1, 1, *images.shape[-2:])
    blurred = F.conv2d(F.pad(planes, (pad, pad, 0, 0), mode="reflect"), weights.reshape(1, 1, 1, -1))
    blurred = F.conv2d(F.pad(blurred, (0, 0, pad, pad), mode="reflect"), weights.reshape(1, 1, -1, 1))
    return blurred.reshape(images.shape)


def _sobel(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gx, gy): right minus left and bottom minus top, weighted 1 2 1 across."""
    smooth = torch.tensor([1.0, 2.0, 1.0], dtype=images.dtype, device=images.device)
    difference = torch.tensor([-1.0, 0.0, 1.0], dtype=images.dtype, device=images.device)
    kernels = torch.stack([torch.outer(smooth, difference), torch.outer(difference, smooth)])[:, None]
    planes = F.pad(images.reshape(-1, 1, *images.shape[-2:]), (1, 1, 1, 1), mode="replicate")
    gradients = F.conv2d(planes, kernels).reshape(*images.shape[:-2], 2, *images.shape[-2:])
    return gradients[..., 0, :, :], gradients[..., 1, :, :]


def _neighbour(values: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """values[..., y + dy, x + dx], zero beyond the border."""
    height, width = values.shape[-2:]
    padded = F.pad(values, (1, 1, 1, 1))
    return padded[..., 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]


def _thin(magnitude: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor) -> torch.Tensor:
    """The magnitude where it is a strict maximum across the edge, else 0."""
    degrees = 180.0 * torch.atan2(gy, gx) / math.pi
    direction = torch.remainder(torch.round(degrees / 45), 8).long()
    shifted = torch.stack([_neighbour(magnitude, dy, dx) for dy, dx in NEIGHBOURS])
    ahead = shifted.gather(0, direction[None]).squeeze(0)
    behind = shifted.gather(0, torch.remainder(direction + 4, 8)[None]).squeeze(0)
    return magnitude * ((magnitude - ahead > 0) & (magnitude - behind > 0))


def _hysteresis(strong: torch.Tensor, weak: torch.Tensor) -> torch.Tensor:
    """Strong pixels grown into 8-connected weak ones until nothing changes."""
    while True:
        touching = F.max_pool2d(strong.float(), 3, stride=1, padding=1) > 0
        grown = strong | (weak & touching)
        if torch.equal(grown, strong):
            return strong
        strong = grown


def canny_edges(images: torch.Tensor, low_threshold: float, high_threshold: float) -> torch.Tensor:
    """[B, C, H, W] in 0..1 -> edges [B, 1, H, W] of 0 and 1. Three or more channels are read as RGB."""
    if low_threshold > high_threshold:
        raise ValueError(
            f"low_threshold ({low_threshold}) must not be above high_threshold ({high_threshold})"
        )
    images = images.float()
    if images.shape[1] >= 3:
        r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
        grey = GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b
    else:
        grey = images[:, :1]
    gx, gy = _sobel(_gaussian_blur(grey))
    magnitude = _thin(torch.sqrt(gx * gx + gy * gy + EPS), gx, gy)
    return _hysteresis(magnitude > high_threshold, magnitude > low_threshold).to(images.dtype)


class Canny:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        threshold = {"min": 0.01, "max": 0.99, "step": 0.01}
        return {
            "required": {
                "image": ("IMAGE", {}),
                "low_threshold": ("FLOAT", {"default": 0.4, **threshold}),
                "high_threshold": ("FLOAT", {"default": 0.8, **threshold}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "detect_edge"
    CATEGORY = "image/preprocessors"

    def detect_edge(
        self, image: torch.Tensor, low_threshold: float, high_threshold: float
    ) -> tuple[torch.Tensor]:
        """White one-pixel edges on black, as an RGB image (a ControlNet's canny input)."""
        edges = canny_edges(image.movedim(-1, 1), low_threshold, high_threshold)
        return (edges.expand(-1, 3, -1, -1).movedim(1, -1).contiguous(),)


NODE_CLASS_MAPPINGS = {"Canny": Canny}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
