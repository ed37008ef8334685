"""VAE decode and encode in overlapping tiles (ComfyUI's VAEDecodeTiled and VAEEncodeTiled), for images
whose whole-image VAE pass would not fit in memory. The temporal inputs are for video VAEs; the image
VAEs this engine loads have no time axis and ignore them, as ComfyUI does for image VAEs."""

from __future__ import annotations

from typing import Any

import torch

from engine.diffusion.vae import VAE

Latent = dict[str, Any]

TEMPORAL_SIZE_TIP = "Only used for video VAEs: Amount of frames to {} at a time."
TEMPORAL_OVERLAP_TIP = "Only used for video VAEs: Amount of frames to overlap."


def _inputs(first: str, kind: str, tile_step: int, verb: str) -> dict[str, Any]:
    return {
        "required": {
            first: (kind,),
            "vae": ("VAE",),
            "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": tile_step}),
            "overlap": ("INT", {"default": 64, "min": 0, "max": 4096, "step": 32}),
            "temporal_size": (
                "INT",
                {"default": 64, "min": 8, "max": 4096, "step": 4, "tooltip": TEMPORAL_SIZE_TIP.format(verb)},
            ),
            "temporal_overlap": (
                "INT",
                {"default": 8, "min": 4, "max": 4096, "step": 4, "tooltip": TEMPORAL_OVERLAP_TIP},
            ),
        }
    }


class VAEDecodeTiled:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _inputs("samples", "LATENT", 32, "decode")

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "decode"
    CATEGORY = "_for_testing"

    def decode(
        self,
        vae: VAE,
        samples: Latent,
        tile_size: int,
        overlap: int = 64,
        temporal_size: int = 64,
        temporal_overlap: int = 8,
    ) -> tuple[torch.Tensor]:
        """Tiles of tile_size pixels (tile_size / 8 latent cells); an overlap over a quarter of the tile is
        lowered to a quarter, as ComfyUI does."""
        if tile_size < overlap * 4:
            overlap = tile_size // 4
        ratio = vae.downscale_ratio
        return (vae.decode_tiled(samples["samples"], tile_size // ratio, overlap // ratio),)


class VAEEncodeTiled:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return _inputs("pixels", "IMAGE", 64, "encode")

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "_for_testing"

    def encode(
        self,
        vae: VAE,
        pixels: torch.Tensor,
        tile_size: int,
        overlap: int,
        temporal_size: int = 64,
        temporal_overlap: int = 8,
    ) -> tuple[Latent]:
        return ({"samples": vae.encode_tiled(pixels, tile_size, overlap)},)


NODE_CLASS_MAPPINGS = {"VAEDecodeTiled": VAEDecodeTiled, "VAEEncodeTiled": VAEEncodeTiled}
NODE_DISPLAY_NAME_MAPPINGS = {"VAEDecodeTiled": "VAE Decode (Tiled)", "VAEEncodeTiled": "VAE Encode (Tiled)"}
