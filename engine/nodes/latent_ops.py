"""Latent nodes beyond the empty ones: scaling, batch slicing and repeating, compositing, cropping, flipping
and the inpainting noise mask, as ComfyUI declares them.

LATENT is {"samples": [B, C, h, w], "noise_mask"?: [B or 1, 1, H, W], "batch_index"?: [int]}. Sizes
and positions in the widgets are pixels; the latent moves in whole cells of 8 pixels. Every node returns
a new dict, keeping the keys it does not touch.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from engine.nodes.latent import LATENT_DOWNSCALE, MAX_RESOLUTION
from engine.nodes.resize import CROP_METHODS, LATENT_UPSCALE_METHODS, resize

Latent = dict[str, Any]

MIN_UPSCALE_SIDE = 64
"""LatentUpscale never makes a side smaller than 64 pixels (8 latent cells)."""

PIXELS_STEP_8 = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})


class LatentUpscale:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8})
        return {
            "required": {
                "samples": ("LATENT",),
                "upscale_method": (LATENT_UPSCALE_METHODS,),
                "width": size,
                "height": size,
                "crop": (CROP_METHODS,),
            }
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "upscale"
    CATEGORY = "latent"

    def upscale(
        self, samples: Latent, upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[Latent]:
        """To (width // 8, height // 8) cells, each side at least 64 pixels; a 0 side follows the other by
        the latent's aspect ratio (both 0: unchanged)."""
        if width == 0 and height == 0:
            return (samples,)
        latent = samples["samples"]
        if width == 0:
            height = max(MIN_UPSCALE_SIDE, height)
            width = max(MIN_UPSCALE_SIDE, round(latent.shape[-1] * height / latent.shape[-2]))
        elif height == 0:
            width = max(MIN_UPSCALE_SIDE, width)
            height = max(MIN_UPSCALE_SIDE, round(latent.shape[-2] * width / latent.shape[-1]))
        else:
            width, height = max(MIN_UPSCALE_SIDE, width), max(MIN_UPSCALE_SIDE, height)
        scaled = resize(latent, width // LATENT_DOWNSCALE, height // LATENT_DOWNSCALE, upscale_method, crop)
        return ({**samples, "samples": scaled},)


class LatentUpscaleBy:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT",),
                "upscale_method": (LATENT_UPSCALE_METHODS,),
                "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "upscale"
    CATEGORY = "latent"

    def upscale(self, samples: Latent, upscale_method: str, scale_by: float) -> tuple[Latent]:
        """Each side's cell count times scale_by, rounded."""
        latent = samples["samples"]
        width = round(latent.shape[-1] * scale_by)
        height = round(latent.shape[-2] * scale_by)
        return ({**samples, "samples": resize(latent, width, height, upscale_method)},)


def _mask_to_batch(mask: torch.Tensor, batch: int) -> torch.Tensor:
    if mask.shape[0] >= batch:
        return mask
    return mask.repeat(math.ceil(batch / mask.shape[0]), *([1] * (mask.ndim - 1)))[:batch]


class LatentFromBatch:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT",),
                "batch_index": ("INT", {"default": 0, "min": 0, "max": 63}),
                "length": ("INT", {"default": 1, "min": 1, "max": 64}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "frombatch"
    CATEGORY = "latent/batch"

    def frombatch(self, samples: Latent, batch_index: int, length: int) -> tuple[Latent]:
        """`length` latents from `batch_index` (past the end: the last one), remembering their positions in
        "batch_index" so the sampler draws the noise they would have had in the whole batch."""
        latent = samples["samples"]
        batch_index = min(latent.shape[0] - 1, batch_index)
        length = min(latent.shape[0] - batch_index, length)
        chosen = slice(batch_index, batch_index + length)
        out = {**samples, "samples": latent[chosen].clone()}
        if "noise_mask" in samples:
            masks = samples["noise_mask"]
            out["noise_mask"] = (
                masks.clone()
                if masks.shape[0] == 1
                else _mask_to_batch(masks, latent.shape[0])[chosen].clone()
            )
        if "batch_index" in samples:
            out["batch_index"] = list(samples["batch_index"])[chosen]
        else:
            out["batch_index"] = list(range(batch_index, batch_index + length))
        return (out,)


class RepeatLatentBatch:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "amount": ("INT", {"default": 1, "min": 1, "max": 64})}}

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "repeat"
    CATEGORY = "latent/batch"

    def repeat(self, samples: Latent, amount: int) -> tuple[Latent]:
        """The batch `amount` times over; a "batch_index" continues past the batch's span, so each copy
        gets fresh noise."""
        latent = samples["samples"]
        out = {**samples, "samples": latent.repeat(amount, *([1] * (latent.ndim - 1)))}
        masks = samples.get("noise_mask")
        if masks is not None and masks.shape[0] > 1:
            masks = _mask_to_batch(masks, latent.shape[0])
            out["noise_mask"] = masks.repeat(amount, *([1] * (masks.ndim - 1)))
        if "batch_index" in samples:
            indices = list(samples["batch_index"])
            span = max(indices) - min(indices) + 1
            out["batch_index"] = indices + [i + copy * span for copy in range(1, amount) for i in indices]
        return (out,)


def edge_ramp(length: int, width: int, start: bool, end: bool) -> torch.Tensor:
    """Per-position factors along one axis: the t-th position (from 0) from a ramped edge is multiplied by
    (t + 1) / width, over at most `length` positions."""
    factors = torch.ones(length, dtype=torch.float64)
    count = min(width, length)
    ramp = torch.arange(1, count + 1, dtype=torch.float64) * (1.0 / width)
    if start:
        factors[:count] *= ramp
    if end:
        factors[length - count :] *= ramp.flip(0)
    return factors


class LatentComposite:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples_to": ("LATENT",),
                "samples_from": ("LATENT",),
                "x": PIXELS_STEP_8,
                "y": PIXELS_STEP_8,
                "feather": PIXELS_STEP_8,
            }
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "composite"
    CATEGORY = "latent"

    def composite(
        self, samples_to: Latent, samples_from: Latent, x: int, y: int, feather: int = 0
    ) -> tuple[Latent]:
        """samples_from pasted at (x // 8, y // 8); with feather, its edges that lie inside samples_to blend
        in linearly over feather // 8 cells."""
        x, y, feather = x // LATENT_DOWNSCALE, y // LATENT_DOWNSCALE, feather // LATENT_DOWNSCALE
        target = samples_to["samples"].clone()
        source = samples_from["samples"][..., : target.shape[-2] - y, : target.shape[-1] - x]
        height, width = source.shape[-2:]
        region = target[..., y : y + height, x : x + width]
        if feather == 0:
            region[...] = source
        else:
            rows = edge_ramp(height, feather, y != 0, y + height < target.shape[-2])
            columns = edge_ramp(width, feather, x != 0, x + width < target.shape[-1])
            weight = (rows[:, None] * columns[None, :]).to(target)
            region[...] = source * weight + region * (1.0 - weight)
        return ({**samples_to, "samples": target},)


class SetLatentNoiseMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "mask": ("MASK",)}}

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "set_mask"
    CATEGORY = "latent/inpaint"

    def set_mask(self, samples: Latent, mask: torch.Tensor) -> tuple[Latent]:
        """Only where the mask is 1 is the latent repainted (the sampler resizes it to the latent)."""
        return ({**samples, "noise_mask": mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1])},)


class LatentCrop:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = ("INT", {"default": 512, "min": 64, "max": MAX_RESOLUTION, "step": 8})
        return {
            "required": {
                "samples": ("LATENT",),
                "width": size,
                "height": size,
                "x": PIXELS_STEP_8,
                "y": PIXELS_STEP_8,
            }
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "crop"
    CATEGORY = "latent/transform"

    def crop(self, samples: Latent, width: int, height: int, x: int, y: int) -> tuple[Latent]:
        """The rectangle at (x // 8, y // 8); the corner moves back to keep at least 8 cells each way."""
        latent = samples["samples"]
        x = min(x // LATENT_DOWNSCALE, latent.shape[-1] - 8)
        y = min(y // LATENT_DOWNSCALE, latent.shape[-2] - 8)
        cropped = latent[..., y : y + height // LATENT_DOWNSCALE, x : x + width // LATENT_DOWNSCALE]
        return ({**samples, "samples": cropped},)


class LatentFlip:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT",),
                "flip_method": (["x-axis: vertically", "y-axis: horizontally"],),
            }
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "flip"
    CATEGORY = "latent/transform"

    def flip(self, samples: Latent, flip_method: str) -> tuple[Latent]:
        dims = [2] if flip_method.startswith("x") else [3]
        return ({**samples, "samples": torch.flip(samples["samples"], dims=dims)},)


class LatentRotate:
    ROTATIONS = ["none", "90 degrees", "180 degrees", "270 degrees"]

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",), "rotation": (cls.ROTATIONS,)}}

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "rotate"
    CATEGORY = "latent/transform"

    def rotate(self, samples: Latent, rotation: str) -> tuple[Latent]:
        """Clockwise by the chosen quarter turns."""
        turned = torch.rot90(samples["samples"], k=self.ROTATIONS.index(rotation), dims=[3, 2])
        return ({**samples, "samples": turned},)


class LatentBlend:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples1": ("LATENT",),
                "samples2": ("LATENT",),
                "blend_factor": ("FLOAT", {"default": 0.5, "min": 0, "max": 1, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "blend"
    CATEGORY = "_for_testing"

    def blend(self, samples1: Latent, samples2: Latent, blend_factor: float) -> tuple[Latent]:
        """samples1 * f + samples2 * (1 - f), samples2 first resized (bicubic, centre-cropped) if needed."""
        first, second = samples1["samples"], samples2["samples"]
        if first.shape != second.shape:
            second = resize(second, first.shape[3], first.shape[2], "bicubic", "center")
        return ({**samples1, "samples": first * blend_factor + second * (1 - blend_factor)},)


NODE_CLASS_MAPPINGS = {
    "LatentUpscale": LatentUpscale,
    "LatentUpscaleBy": LatentUpscaleBy,
    "LatentFromBatch": LatentFromBatch,
    "RepeatLatentBatch": RepeatLatentBatch,
    "LatentComposite": LatentComposite,
    "SetLatentNoiseMask": SetLatentNoiseMask,
    "LatentCrop": LatentCrop,
    "LatentFlip": LatentFlip,
    "LatentRotate": LatentRotate,
    "LatentBlend": LatentBlend,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LatentUpscale": "Upscale Latent",
    "LatentUpscaleBy": "Upscale Latent By",
    "LatentFromBatch": "Latent From Batch",
    "RepeatLatentBatch": "Repeat Latent Batch",
    "LatentComposite": "Latent Composite",
    "SetLatentNoiseMask": "Set Latent Noise Mask",
    "LatentCrop": "Crop Latent",
    "LatentFlip": "Flip Latent",
    "LatentRotate": "Rotate Latent",
    "LatentBlend": "Latent Blend",
}
