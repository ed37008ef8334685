"""Image batch nodes: joining, slicing and repeating batches of IMAGE [B, H, W, C], as ComfyUI has them."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engine.nodes.image_transform import scale_image


class ImageBatch:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "batch"
    CATEGORY = "image"
    DEPRECATED = True

    def batch(self, image1: torch.Tensor, image2: torch.Tensor) -> tuple[torch.Tensor]:
        """image1's images then image2's; image2 is first resized (bilinear, centre-cropped) to image1's size,
        and the one without alpha gains an opaque alpha if the other has it."""
        channels = max(image1.shape[-1], image2.shape[-1])
        image1 = F.pad(image1, (0, channels - image1.shape[-1]), value=1.0)
        image2 = F.pad(image2, (0, channels - image2.shape[-1]), value=1.0)
        if image1.shape[1:3] != image2.shape[1:3]:
            image2 = scale_image(image2, image1.shape[2], image1.shape[1], "bilinear", "center")
        return (torch.cat((image1, image2.to(image1)), dim=0),)


class ImageFromBatch:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "image": ("IMAGE", {}),
                "batch_index": ("INT", {"default": 0, "min": 0, "max": 4095}),
                "length": ("INT", {"default": 1, "min": 1, "max": 4096}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "frombatch"
    CATEGORY = "image/batch"

    def frombatch(self, image: torch.Tensor, batch_index: int, length: int) -> tuple[torch.Tensor]:
        """`length` images from `batch_index`; an index past the end takes the last image."""
        batch_index = min(image.shape[0] - 1, batch_index)
        length = min(image.shape[0] - batch_index, length)
        return (image[batch_index : batch_index + length].clone(),)


class RepeatImageBatch:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"image": ("IMAGE", {}), "amount": ("INT", {"default": 1, "min": 1, "max": 4096})}
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "repeat"
    CATEGORY = "image/batch"

    def repeat(self, image: torch.Tensor, amount: int) -> tuple[torch.Tensor]:
        """The whole batch `amount` times over (a b, a b, ...)."""
        return (image.repeat(amount, 1, 1, 1),)


NODE_CLASS_MAPPINGS = {
    "ImageBatch": ImageBatch,
    "ImageFromBatch": ImageFromBatch,
    "RepeatImageBatch": RepeatImageBatch,
}
NODE_DISPLAY_NAME_MAPPINGS = {"ImageBatch": "Batch Images"}
