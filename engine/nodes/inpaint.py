"""Inpainting nodes that encode an image with the masked part greyed out: VAEEncodeForInpaint (for any
model: the latent carries a noise mask) and InpaintModelConditioning (for inpainting models: the masked
image's latent and the mask ride on the conditioning), as ComfyUI declares them.

Both crop the image to a multiple of the VAE's cell size, centred (as VAEEncode does), and resize the
mask to the image first; "masked" means a mask value that rounds to 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from engine.diffusion.protocols import Conditioning
from engine.diffusion.vae import VAE
from engine.nodes.conditioning_ops import set_values

Latent = dict[str, Any]

GREY = 0.5
"""What masked pixels become before encoding: the VAE's neutral value, so nothing of them leaks in."""


def crop_with_mask(
    pixels: torch.Tensor, mask: torch.Tensor, multiple: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """IMAGE [B, H, W, C] and the mask resized to it ([B, 1, H, W]), both cropped to the centred part whose
    sides are multiples of `multiple`."""
    height, width = pixels.shape[1], pixels.shape[2]
    planes = F.interpolate(
        mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).float(), size=(height, width), mode="bilinear"
    )
    kept_height, kept_width = height // multiple * multiple, width // multiple * multiple
    top, left = (height % multiple) // 2, (width % multiple) // 2
    return (
        pixels[:, top : top + kept_height, left : left + kept_width],
        planes[:, :, top : top + kept_height, left : left + kept_width],
    )


def grey_out(pixels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """RGB of IMAGE set to mid-grey where the [B, 1, H, W] mask rounds to 1 (other channels untouched)."""
    keep = (1.0 - mask.round())[:, 0, :, :, None]
    out = pixels.clone()
    out[..., :3] = (pixels[..., :3] - GREY) * keep + GREY
    return out


class VAEEncodeForInpaint:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "pixels": ("IMAGE",),
                "vae": ("VAE",),
                "mask": ("MASK",),
                "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64, "step": 1}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "latent/inpaint"

    def encode(
        self, vae: VAE, pixels: torch.Tensor, mask: torch.Tensor, grow_mask_by: int = 6
    ) -> tuple[Latent]:
        """The latent of the image with the masked part grey, and as its noise mask the binary mask grown by
        `grow_mask_by` pixels (a box of that size around each masked pixel), so the seam is repainted too."""
        pixels, mask = crop_with_mask(pixels, mask, vae.downscale_ratio)
        noise_mask = mask
        if grow_mask_by > 0:
            box = torch.ones((1, 1, grow_mask_by, grow_mask_by), dtype=mask.dtype)
            padding = math.ceil((grow_mask_by - 1) / 2)
            grown = F.conv2d(mask.round(), box, padding=padding).clamp(0, 1)
            noise_mask = grown[:, :, : mask.shape[2], : mask.shape[3]]
        return ({"samples": vae.encode(grey_out(pixels, mask)), "noise_mask": noise_mask.round()},)


class InpaintModelConditioning:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "vae": ("VAE",),
                "pixels": ("IMAGE",),
                "mask": ("MASK",),
                "noise_mask": (
                    "BOOLEAN",
                    {
                        "default": True,
                        "tooltip": "Add a noise mask to the latent so sampling will only happen within the "
                        "mask. Might improve results or completely break things depending on the model.",
                    },
                ),
            }
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"
    CATEGORY = "conditioning/inpaint"

    def encode(
        self,
        positive: Conditioning,
        negative: Conditioning,
        pixels: torch.Tensor,
        vae: VAE,
        mask: torch.Tensor,
        noise_mask: bool = True,
    ) -> tuple[Conditioning, Conditioning, Latent]:
        """The unmasked image's latent to sample from (with the mask as its noise mask if asked), and both
        prompts carrying the greyed image's latent and the mask, which inpainting models read beside the
        noisy latent (other models ignore them, as in ComfyUI)."""
        cropped, cropped_mask = crop_with_mask(pixels, mask, 8)
        masked_latent = vae.encode(grey_out(cropped, cropped_mask))
        latent: Latent = {"samples": vae.encode(pixels)}
        if noise_mask:
            latent["noise_mask"] = cropped_mask
        values = {"concat_latent_image": masked_latent, "concat_mask": cropped_mask}
        return set_values(positive, values), set_values(negative, values), latent


NODE_CLASS_MAPPINGS = {
    "VAEEncodeForInpaint": VAEEncodeForInpaint,
    "InpaintModelConditioning": InpaintModelConditioning,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "VAEEncodeForInpaint": "VAE Encode (for Inpainting)",
    "InpaintModelConditioning": "InpaintModelConditioning",
}
