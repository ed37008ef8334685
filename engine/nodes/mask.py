"""Mask nodes: masks from files, images and constants, and the arithmetic on them, as ComfyUI declares them.

A MASK is float [B, H, W] (a bare [H, W] is accepted wherever ComfyUI accepts it) with 1 meaning "this
pixel is selected"; from an image's alpha channel that is 1 - alpha, so transparent pixels are the ones
to repaint.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from engine import folders
from engine.nodes.image import PreviewImage
from engine.nodes.latent import MAX_RESOLUTION

CHANNELS = ["red", "green", "blue", "alpha"]
FILE_CHANNELS = ["alpha", "red", "green", "blue"]
"""LoadImageMask's order, alpha first (the usual source of a mask)."""

COMPOSITE_OPERATIONS = ["multiply", "add", "subtract", "and", "or", "xor"]

POSITION = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})
SIZE = ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1})


def as_batch(mask: torch.Tensor) -> torch.Tensor:
    """Any MASK as [B, H, W]."""
    return mask.reshape(-1, mask.shape[-2], mask.shape[-1])


def input_files() -> list[str]:
    """Every file at the top of the input folder: LoadImageMask lists them all, images or not."""
    directory = folders.get_input_directory()
    if not directory.is_dir():
        return []
    return sorted(entry.name for entry in directory.iterdir() if entry.is_file())


class LoadImageMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": (input_files(), {"image_upload": True}), "channel": (FILE_CHANNELS,)}}

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("MASK",)
    FUNCTION = "load_image"
    CATEGORY = "mask"

    def load_image(self, image: str, channel: str) -> tuple[torch.Tensor]:
        """One channel of the file's first frame as a [1, H, W] mask; alpha is inverted (transparent = 1)."""
        with Image.open(folders.get_annotated_filepath(image)) as picture:
            frame = ImageOps.exif_transpose(picture)
            if frame.getbands() != ("R", "G", "B", "A"):
                if frame.mode == "I":
                    frame = frame.point(lambda value: value * (1 / 255))
                frame = frame.convert("RGBA")
            band = channel[0].upper()
            values = torch.from_numpy(np.array(frame.getchannel(band)).astype(np.float32) / 255.0)
        return ((1.0 - values if band == "A" else values)[None],)

    @classmethod
    def IS_CHANGED(cls, image: str, channel: str) -> str:
        return hashlib.sha256(folders.get_annotated_filepath(image).read_bytes()).hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        if not folders.exists_annotated_filepath(image):
            return f"Invalid image file: {image}"
        return True


class MaskToImage:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK", {})}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "mask_to_image"
    CATEGORY = "mask"

    def mask_to_image(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        """The mask as a grey image: the same value in R, G and B."""
        return (as_batch(mask)[..., None].expand(-1, -1, -1, 3).clone(),)


class ImageToMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {}), "channel": ("COMBO", {"options": CHANNELS})}}

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("MASK",)
    FUNCTION = "image_to_mask"
    CATEGORY = "mask"

    def image_to_mask(self, image: torch.Tensor, channel: str) -> tuple[torch.Tensor]:
        index = CHANNELS.index(channel)
        if index >= image.shape[-1]:
            raise ValueError(f"the image has {image.shape[-1]} channels, so it has no {channel} channel")
        return (image[..., index].clone(),)


class ImageColorToMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE", {}),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "number"}),
            }
        }

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("MASK",)
    FUNCTION = "image_to_mask"
    CATEGORY = "mask"

    def image_to_mask(self, image: torch.Tensor, color: int) -> tuple[torch.Tensor]:
        """1 where the pixel's 8-bit RGB (rounded) is exactly `color` (0xRRGGBB)."""
        rgb = (image[..., :3].clamp(0, 1) * 255.0).round().to(torch.int64)
        packed = (rgb[..., 0] << 16) + (rgb[..., 1] << 8) + rgb[..., 2]
        return ((packed == color).float(),)


class SolidMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "value": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "width": SIZE,
                "height": SIZE,
            }
        }

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("MASK",)
    FUNCTION = "solid"
    CATEGORY = "mask"

    def solid(self, value: float, width: int, height: int) -> tuple[torch.Tensor]:
        return (torch.full((1, height, width), value, dtype=torch.float32),)


class InvertMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"mask": ("MASK", {})}}

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("MASK",)
    FUNCTION = "invert"
    CATEGORY = "mask"

    def invert(self, mask: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - mask,)


class CropMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"mask": ("MASK", {}), "x": POSITION, "y": POSITION, "width": SIZE, "height": SIZE}
        }

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("MASK",)
    FUNCTION = "crop"
    CATEGORY = "mask"

    def crop(self, mask: torch.Tensor, x: int, y: int, width: int, height: int) -> tuple[torch.Tensor]:
        """The part inside the rectangle; a rectangle past the edge is cut off there (may leave nothing)."""
        return (as_batch(mask)[:, y : y + height, x : x + width].clone(),)


class MaskComposite:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "destination": ("MASK", {}),
                "source": ("MASK", {}),
                "x": POSITION,
                "y": POSITION,
                "operation": ("COMBO", {"options": COMPOSITE_OPERATIONS}),
            }
        }

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("MASK",)
    FUNCTION = "combine"
    CATEGORY = "mask"

    def combine(
        self, destination: torch.Tensor, source: torch.Tensor, x: int, y: int, operation: str
    ) -> tuple[torch.Tensor]:
        """`source` placed with its top-left corner at (x, y) and combined with what lies under it; the
        logical operations threshold both at 0.5. The whole result is clamped to 0..1."""
        output = as_batch(destination).clone()
        source = as_batch(source).to(output.device)
        width = max(0, min(source.shape[-1], output.shape[-1] - x))
        height = max(0, min(source.shape[-2], output.shape[-2] - y))
        under = output[:, y : y + height, x : x + width]
        over = source[:, :height, :width]
        if operation == "multiply":
            result = under * over
        elif operation == "add":
            result = under + over
        elif operation == "subtract":
            result = under - over
        else:
            logical = {"and": torch.logical_and, "or": torch.logical_or, "xor": torch.logical_xor}[operation]
            result = logical(under.round().bool(), over.round().bool()).float()
        output[:, y : y + height, x : x + width] = result
        return (output.clamp(0.0, 1.0),)


class FeatherMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        edge = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})
        return {"required": {"mask": ("MASK", {}), "left": edge, "top": edge, "right": edge, "bottom": edge}}

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("MASK",)
    FUNCTION = "feather"
    CATEGORY = "mask"

    def feather(
        self, mask: torch.Tensor, left: int, top: int, right: int, bottom: int
    ) -> tuple[torch.Tensor]:
        """Fades the mask towards the chosen edges: the k-th row or column (from 0) inside an edge n wide
        is multiplied by (k + 1) / n."""
        output = as_batch(mask)
        rows = _edge_fade(output.shape[-2], top, bottom).to(output)
        columns = _edge_fade(output.shape[-1], left, right).to(output)
        return (output * rows[:, None] * columns[None, :],)


def _edge_fade(length: int, start: int, end: int) -> torch.Tensor:
    """Per-position factors along one axis: ramps up over the first `start` and down over the last `end`."""
    fade = torch.ones(length)
    start, end = min(start, length), min(end, length)
    if start:
        fade[:start] *= torch.arange(1, start + 1) / start
    if end:
        fade[length - end :] *= (torch.arange(1, end + 1) / end).flip(0)
    return fade


def _shift_extreme(masks: torch.Tensor, square: bool, largest: bool) -> torch.Tensor:
    """One step of grey dilation (largest) or erosion over the 3x3 cross (or square) around each pixel;
    pixels beyond the edge repeat the edge, as scipy.ndimage's default "reflect" border does."""
    height, width = masks.shape[-2:]
    padded = F.pad(masks[:, None], (1, 1, 1, 1), mode="replicate")[:, 0]
    offsets = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)]
    if square:
        offsets += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    shifted = torch.stack(
        [padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] for dy, dx in offsets]
    )
    return shifted.amax(0) if largest else shifted.amin(0)


class GrowMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK", {}),
                "expand": ("INT", {"default": 0, "min": -MAX_RESOLUTION, "max": MAX_RESOLUTION, "step": 1}),
                "tapered_corners": ("BOOLEAN", {"default": True}),
            }
        }

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("MASK",)
    FUNCTION = "expand_mask"
    CATEGORY = "mask"

    def expand_mask(self, mask: torch.Tensor, expand: int, tapered_corners: bool) -> tuple[torch.Tensor]:
        """Grows (expand > 0) or shrinks the mask by |expand| pixels, one 3x3 step at a time: tapered corners
        step over the cross (4 neighbours, so corners round off), otherwise over the full square.

        After height + width steps every pixel has seen every other, so further steps change nothing and
        are skipped.
        """
        output = as_batch(mask).float()
        steps = min(abs(expand), output.shape[-2] + output.shape[-1])
        for _ in range(steps):
            output = _shift_extreme(output, square=not tapered_corners, largest=expand > 0)
        return (output,)


class ThresholdMask:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "mask": ("MASK", {}),
                "value": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("MASK",)
    RETURN_NAMES = ("MASK",)
    FUNCTION = "image_to_mask"
    CATEGORY = "mask"

    def image_to_mask(self, mask: torch.Tensor, value: float) -> tuple[torch.Tensor]:
        """1 strictly above `value`, else 0."""
        return ((mask > value).float(),)


class MaskPreview(PreviewImage):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"mask": ("MASK", {})},
            "hidden": {"prompt": ("PROMPT",), "extra_pnginfo": ("EXTRA_PNGINFO",)},
        }

    FUNCTION = "execute"
    CATEGORY = "mask"
    DESCRIPTION = "Saves the mask as a grey image to the temporary folder for display."

    def execute(
        self, mask: torch.Tensor, prompt: Any = None, extra_pnginfo: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        (image,) = MaskToImage().mask_to_image(mask)
        return self.save_images(image, "ComfyUI", prompt, extra_pnginfo)


NODE_CLASS_MAPPINGS = {
    "LoadImageMask": LoadImageMask,
    "MaskToImage": MaskToImage,
    "ImageToMask": ImageToMask,
    "ImageColorToMask": ImageColorToMask,
    "SolidMask": SolidMask,
    "InvertMask": InvertMask,
    "CropMask": CropMask,
    "MaskComposite": MaskComposite,
    "FeatherMask": FeatherMask,
    "GrowMask": GrowMask,
    "ThresholdMask": ThresholdMask,
    "MaskPreview": MaskPreview,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadImageMask": "Load Image (as Mask)",
    "MaskToImage": "Convert Mask to Image",
    "ImageToMask": "Convert Image to Mask",
    "GrowMask": "Grow Mask",
    "MaskPreview": "Preview Mask",
}
