"""Resizing [B, C, H, W] tensors as ComfyUI's image and latent scaling nodes do (its `common_upscale`).

Every scaling node goes through `resize`, so they agree with ComfyUI and with each other on the three
things a user sees: where a centre crop cuts (rounded half to even, like Python's round), that
"lanczos" is Pillow's 8-bit filter (the result is quantised to 1/255), and that "bislerp" blends
latent vectors along the great circle rather than linearly, keeping their length.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
LATENT_UPSCALE_METHODS = ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]
CROP_METHODS = ["disabled", "center"]

SLERP_PARALLEL = 1e-5
"""How close to parallel (or opposite) two vectors must be for bislerp to take the first (or lerp)."""


def resize(
    samples: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled"
) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, height, width]; crop "center" first trims the longer side to the new aspect."""
    if crop == "center":
        samples = center_crop(samples, width / height)
    if method == "lanczos":
        return lanczos(samples, width, height)
    if method == "bislerp":
        return bislerp(samples, width, height)
    return F.interpolate(samples, size=(height, width), mode=method)


def center_crop(samples: torch.Tensor, aspect: float) -> torch.Tensor:
    """The centred part of [..., H, W] with width / height = `aspect`, the margin rounded as ComfyUI does."""
    height, width = samples.shape[-2], samples.shape[-1]
    old_aspect = width / height
    left = top = 0
    if old_aspect > aspect:
        left = round((width - width * (aspect / old_aspect)) / 2)
    elif old_aspect < aspect:
        top = round((height - height * (old_aspect / aspect)) / 2)
    return samples[..., top : height - top, left : width - left]


def lanczos(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Pillow's Lanczos filter on the 8-bit image (RGBA images are resized with premultiplied alpha, as
    Pillow does for them); other channel counts are resized one channel at a time."""
    images = []
    for sample in samples:
        pixels = np.clip(255.0 * sample.movedim(0, -1).float().cpu().numpy(), 0, 255).astype(np.uint8)
        if pixels.shape[-1] in (3, 4):
            resized = np.array(Image.fromarray(pixels).resize((width, height), Image.Resampling.LANCZOS))
        else:
            channels = [
                np.array(Image.fromarray(pixels[..., c]).resize((width, height), Image.Resampling.LANCZOS))
                for c in range(pixels.shape[-1])
            ]
            resized = np.stack(channels, axis=-1)
        images.append(torch.from_numpy(resized.astype(np.float32) / 255.0).movedim(-1, 0))
    return torch.stack(images).to(samples.device, samples.dtype)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Rows of a [N, C] to rows of b at fractions t [N, 1]: the direction along the great circle, the
    length interpolated linearly (ComfyUI's choice; not a true slerp of the vectors)."""
    norm_a = a.norm(dim=-1, keepdim=True)
    norm_b = b.norm(dim=-1, keepdim=True)
    unit_a = torch.where(norm_a == 0, 0.0, a / norm_a)
    unit_b = torch.where(norm_b == 0, 0.0, b / norm_b)
    dot = (unit_a * unit_b).sum(dim=-1, keepdim=True)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    direction = (torch.sin((1.0 - t) * omega) * unit_a + torch.sin(t * omega) * unit_b) / sin_omega
    result = direction * (norm_a * (1.0 - t) + norm_b * t)
    result = torch.where(dot > 1 - SLERP_PARALLEL, a, result)
    return torch.where(dot < SLERP_PARALLEL - 1, a * (1.0 - t) + b * t, result)


def _neighbours(length: int, new_length: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """For each of `new_length` output positions: the two source indices it lies between and the fraction
    towards the second, sampled where bilinear interpolation (half-pixel centres) samples them."""
    positions = torch.arange(length, dtype=torch.float32, device=device).reshape(1, 1, 1, -1)
    sampled = F.interpolate(positions, size=(1, new_length), mode="bilinear").flatten()
    lower = sampled.to(torch.int64)
    upper = torch.clamp(lower + 1, max=length - 1)
    return lower, upper, sampled - sampled.floor()


def bislerp(samples: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Bilinear resize that slerps channel vectors (a latent pixel's direction matters more than its size):
    along the width, then along the height."""
    dtype = samples.dtype
    x = samples.float()
    for dim, size in ((3, width), (2, height)):
        lower, upper, fraction = _neighbours(x.shape[dim], size, x.device)
        first = x.index_select(dim, lower).movedim(1, -1)
        second = x.index_select(dim, upper).movedim(1, -1)
        shape = [1] * first.ndim
        shape[dim - 1] = size
        t = fraction.reshape(shape).expand(*first.shape[:-1], 1)
        channels = first.shape[-1]
        mixed = _slerp(first.reshape(-1, channels), second.reshape(-1, channels), t.reshape(-1, 1))
        x = mixed.reshape(first.shape).movedim(-1, 1)
    return x.to(dtype)
