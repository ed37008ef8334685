"""Image geometry nodes: scaling, cropping, flipping, rotating, stitching, padding for outpainting, and
the pixel-wise invert, as ComfyUI declares them. IMAGE is float [B, H, W, C] in 0..1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from engine.nodes.latent import MAX_RESOLUTION
from engine.nodes.resize import CROP_METHODS, IMAGE_UPSCALE_METHODS, resize

MAX_DIMENSION_METHODS = ["area", "lanczos", "bilinear", "nearest-exact", "bilinear", "bicubic"]
"""ImageScaleToMaxDimension's list, "bilinear" twice included (ComfyUI's, so saved graphs validate)."""

STITCH_DIRECTIONS = ["right", "down", "left", "up"]
STITCH_COLORS: dict[str, tuple[float, float, float]] = {
    "white": (1.0, 1.0, 1.0),
    "black": (0.0, 0.0, 0.0),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
}
ROTATIONS = ["none", "90 degrees", "180 degrees", "270 degrees"]
FLIPS = ["x-axis: vertically", "y-axis: horizontally"]


def scale_image(
    image: torch.Tensor, width: int, height: int, method: str, crop: str = "disabled"
) -> torch.Tensor:
    return resize(image.movedim(-1, 1), width, height, method, crop).movedim(1, -1)


class ImageScale:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1})
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (IMAGE_UPSCALE_METHODS,),
                "width": size,
                "height": size,
                "crop": (CROP_METHODS,),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(
        self, image: torch.Tensor, upscale_method: str, width: int, height: int, crop: str
    ) -> tuple[torch.Tensor]:
        """To width x height; a 0 side follows the other by the image's aspect ratio (both 0: unchanged)."""
        if width == 0 and height == 0:
            return (image,)
        if width == 0:
            width = max(1, round(image.shape[2] * height / image.shape[1]))
        elif height == 0:
            height = max(1, round(image.shape[1] * width / image.shape[2]))
        return (scale_image(image, width, height, upscale_method, crop),)


class ImageScaleBy:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE",),
                "upscale_method": (IMAGE_UPSCALE_METHODS,),
                "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image: torch.Tensor, upscale_method: str, scale_by: float) -> tuple[torch.Tensor]:
        width = round(image.shape[2] * scale_by)
        height = round(image.shape[1] * scale_by)
        return (scale_image(image, width, height, upscale_method),)


class ImageScaleToTotalPixels:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE", {}),
                "upscale_method": ("COMBO", {"options": IMAGE_UPSCALE_METHODS}),
                "megapixels": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 16.0, "step": 0.01}),
                "resolution_steps": ("INT", {"default": 1, "min": 1, "max": 256}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(
        self, image: torch.Tensor, upscale_method: str, megapixels: float, resolution_steps: int = 1
    ) -> tuple[torch.Tensor]:
        """To about `megapixels` * 2^20 pixels at the same aspect ratio, each side rounded to a multiple of
        `resolution_steps`."""
        scale = math.sqrt(megapixels * 1024 * 1024 / (image.shape[1] * image.shape[2]))
        width = round(image.shape[2] * scale / resolution_steps) * resolution_steps
        height = round(image.shape[1] * scale / resolution_steps) * resolution_steps
        if width == 0 or height == 0:
            raise ValueError(
                f"{megapixels} megapixels in steps of {resolution_steps} leaves a side of 0 pixels for a "
                f"{image.shape[2]}x{image.shape[1]} image; lower resolution_steps or raise megapixels"
            )
        return (scale_image(image, width, height, upscale_method),)


class ImageScaleToMaxDimension:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE", {}),
                "upscale_method": ("COMBO", {"options": MAX_DIMENSION_METHODS}),
                "largest_size": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image: torch.Tensor, upscale_method: str, largest_size: int) -> tuple[torch.Tensor]:
        """The longer side to `largest_size`, the other in proportion (rounded)."""
        height, width = image.shape[1], image.shape[2]
        if height > width:
            width, height = round(width / height * largest_size), largest_size
        elif width > height:
            width, height = largest_size, round(height / width * largest_size)
        else:
            width = height = largest_size
        return (scale_image(image, width, height, upscale_method),)


class GetImageSize:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {})}, "hidden": {"unique_id": ("UNIQUE_ID",)}}

    RETURN_TYPES = ("INT", "INT", "INT")
    RETURN_NAMES = ("width", "height", "batch_size")
    FUNCTION = "get_size"
    CATEGORY = "image"
    DESCRIPTION = "Returns width and height of the image, and passes it through unchanged."

    def get_size(self, image: torch.Tensor, unique_id: str | None = None) -> tuple[int, int, int]:
        return image.shape[2], image.shape[1], image.shape[0]


class ImageCrop:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1})
        position = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 1})
        return {
            "required": {"image": ("IMAGE", {}), "width": size, "height": size, "x": position, "y": position}
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "crop"
    CATEGORY = "image/transform"

    def crop(self, image: torch.Tensor, width: int, height: int, x: int, y: int) -> tuple[torch.Tensor]:
        """The rectangle at (x, y), cut off at the image's edges; a corner past them moves to the last
        row or column, so the result is never empty."""
        x = min(x, image.shape[2] - 1)
        y = min(y, image.shape[1] - 1)
        return (image[:, y : y + height, x : x + width].clone(),)


class ImageInvert:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "invert"
    CATEGORY = "image"

    def invert(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        return (1.0 - image,)


class ImageFlip:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {}), "flip_method": ("COMBO", {"options": FLIPS})}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "flip"
    CATEGORY = "image/transform"

    def flip(self, image: torch.Tensor, flip_method: str) -> tuple[torch.Tensor]:
        """ "x-axis" mirrors top to bottom, "y-axis" left to right."""
        return (torch.flip(image, dims=[1] if flip_method.startswith("x") else [2]),)


class ImageRotate:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {}), "rotation": ("COMBO", {"options": ROTATIONS})}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "rotate"
    CATEGORY = "image/transform"

    def rotate(self, image: torch.Tensor, rotation: str) -> tuple[torch.Tensor]:
        """Clockwise by the chosen quarter turns."""
        return (torch.rot90(image, k=ROTATIONS.index(rotation), dims=[2, 1]),)


def _with_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """An image given extra channels of ones (an opaque alpha) up to `channels`."""
    missing = channels - image.shape[-1]
    return F.pad(image, (0, missing), value=1.0) if missing > 0 else image


def _pad_centred(image: torch.Tensor, dim: int, size: int, value: float) -> torch.Tensor:
    """Pads dimension `dim` (1 height, 2 width) of [B, H, W, C] to `size`, half before (rounded down)."""
    missing = size - image.shape[dim]
    if missing <= 0:
        return image
    before, after = missing // 2, missing - missing // 2
    padding = (0, 0, before, after) if dim == 2 else (0, 0, 0, 0, before, after)
    return F.pad(image, padding, value=value)


def _repeat_last(image: torch.Tensor, batch: int) -> torch.Tensor:
    """A batch lengthened to `batch` by repeating its last image."""
    if image.shape[0] >= batch:
        return image
    return torch.cat([image, image[-1:].expand(batch - image.shape[0], -1, -1, -1)])


class ImageStitch:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image1": ("IMAGE", {}),
                "direction": ("COMBO", {"options": STITCH_DIRECTIONS, "default": "right"}),
                "match_image_size": ("BOOLEAN", {"default": True}),
                "spacing_width": ("INT", {"default": 0, "min": 0, "max": 1024, "step": 2}),
                "spacing_color": ("COMBO", {"options": list(STITCH_COLORS), "default": "white"}),
            },
            "optional": {"image2": ("IMAGE", {})},
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "stitch"
    CATEGORY = "image/transform"
    DESCRIPTION = (
        "Stitches image2 to image1 in the specified direction.\nIf image2 is not provided, returns image1 "
        "unchanged.\nOptional spacing can be added between images."
    )

    def stitch(
        self,
        image1: torch.Tensor,
        direction: str,
        match_image_size: bool,
        spacing_width: int,
        spacing_color: str,
        image2: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor]:
        """image2 beside (right/left) or below/above (down/up) image1.

        The shorter batch repeats its last image. With match_image_size, image2 is resized (Lanczos) to
        image1's height (or width), keeping its aspect ratio, the other side truncated; without it, the
        smaller is padded, centred, with the spacing colour (black for red/green/blue). Spacing is rounded
        up to an even width; an image without alpha gains an opaque one if the other has it.
        """
        if image2 is None:
            return (image1,)
        batch = max(image1.shape[0], image2.shape[0])
        image1, image2 = _repeat_last(image1, batch), _repeat_last(image2, batch)
        horizontal = direction in ("left", "right")
        color = STITCH_COLORS[spacing_color]
        if match_image_size:
            aspect = image2.shape[2] / image2.shape[1]
            if horizontal:
                width, height = int(image1.shape[1] * aspect), image1.shape[1]
            else:
                width, height = image1.shape[2], int(image1.shape[2] / aspect)
            image2 = scale_image(image2, width, height, "lanczos")
        else:
            pad_value = color[0] if len(set(color)) == 1 else 0.0
            dim = 1 if horizontal else 2
            common = max(image1.shape[dim], image2.shape[dim])
            image1 = _pad_centred(image1, dim, common, pad_value)
            image2 = _pad_centred(image2, dim, common, pad_value)
        channels = max(image1.shape[-1], image2.shape[-1])
        image1, image2 = _with_channels(image1, channels), _with_channels(image2, channels)
        parts = [image2, image1] if direction in ("left", "up") else [image1, image2]
        if spacing_width > 0:
            spacing_width += spacing_width % 2
            if horizontal:
                shape = (batch, max(image1.shape[1], image2.shape[1]), spacing_width, channels)
            else:
                shape = (batch, spacing_width, max(image1.shape[2], image2.shape[2]), channels)
            spacer = torch.zeros(shape, dtype=image1.dtype, device=image1.device)
            spacer[..., : min(3, channels)] = torch.tensor(color[: min(3, channels)], dtype=image1.dtype)
            if channels == 4:
                spacer[..., 3] = 1.0
            parts.insert(1, spacer)
        return (torch.cat(parts, dim=2 if horizontal else 1),)


def outpaint_mask(
    height: int, width: int, left: int, top: int, right: int, bottom: int, feathering: int
) -> torch.Tensor:
    """ComfyUI's outpainting mask [H + top + bottom, W + left + right]: 1 over the new border; inside the
    original image, ((f - d) / f)^2 within f = feathering pixels of a padded side (d counting from 0 at
    the top and left edges, from 1 at the bottom and right ones), 0 elsewhere. No feathering at all when
    2f is not less than both the height and the width."""
    mask = torch.ones((height + top + bottom, width + left + right), dtype=torch.float32)
    inner = torch.zeros((height, width), dtype=torch.float32)
    if feathering > 0 and feathering * 2 < height and feathering * 2 < width:
        rows = torch.arange(height, dtype=torch.float64)[:, None].expand(height, width)
        columns = torch.arange(width, dtype=torch.float64)[None, :].expand(height, width)
        far_rows = torch.full((height, width), float(height), dtype=torch.float64)
        far_columns = torch.full((height, width), float(width), dtype=torch.float64)
        distance = torch.stack(
            [
                rows if top else far_rows,
                height - rows if bottom else far_rows,
                columns if left else far_columns,
                width - columns if right else far_columns,
            ]
        ).amin(0)
        fade = (feathering - distance) / feathering
        inner = torch.where(distance < feathering, fade * fade, 0.0).float()
    mask[top : top + height, left : left + width] = inner
    return mask


class ImagePadForOutpaint:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        side = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})
        return {
            "required": {
                "image": ("IMAGE",),
                "left": side,
                "top": side,
                "right": side,
                "bottom": side,
                "feathering": ("INT", {"default": 40, "min": 0, "max": MAX_RESOLUTION, "step": 1}),
            }
        }

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("IMAGE", "MASK")
    FUNCTION = "expand_image"
    CATEGORY = "image"

    def expand_image(
        self, image: torch.Tensor, left: int, top: int, right: int, bottom: int, feathering: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The image on a mid-grey (0.5) canvas grown by the given sides, and the mask of what to paint."""
        batch, height, width, channels = image.shape
        canvas = torch.full(
            (batch, height + top + bottom, width + left + right, channels), 0.5, dtype=torch.float32
        )
        canvas[:, top : top + height, left : left + width] = image
        return canvas, outpaint_mask(height, width, left, top, right, bottom, feathering)[None]


NODE_CLASS_MAPPINGS = {
    "ImageScale": ImageScale,
    "ImageScaleBy": ImageScaleBy,
    "ImageScaleToTotalPixels": ImageScaleToTotalPixels,
    "ImageScaleToMaxDimension": ImageScaleToMaxDimension,
    "GetImageSize": GetImageSize,
    "ImageCrop": ImageCrop,
    "ImageInvert": ImageInvert,
    "ImageFlip": ImageFlip,
    "ImageRotate": ImageRotate,
    "ImageStitch": ImageStitch,
    "ImagePadForOutpaint": ImagePadForOutpaint,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ImageScale": "Upscale Image",
    "ImageScaleBy": "Upscale Image By",
    "GetImageSize": "Get Image Size",
    "ImageCrop": "Image Crop",
    "ImageInvert": "Invert Image",
    "ImageStitch": "Image Stitch",
    "ImagePadForOutpaint": "Pad Image for Outpainting",
}
