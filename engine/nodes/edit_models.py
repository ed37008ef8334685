"""Nodes for Flux Kontext, the image-editing model: reference images for the conditioning, how the model
places them, and the image sizes Kontext was trained at, as ComfyUI declares them.

The model reads a reference as extra tokens after the image's (engine.diffusion.flux.reference_tokens).
"""

from __future__ import annotations

from typing import Any

import torch

from engine.diffusion.protocols import Conditioning
from engine.nodes.conditioning_ops import set_values
from engine.nodes.resize import resize

Latent = dict[str, Any]

KONTEXT_RESOLUTIONS = (
    (672, 1568),
    (688, 1504),
    (720, 1456),
    (752, 1392),
    (800, 1328),
    (832, 1248),
    (880, 1184),
    (944, 1104),
    (1024, 1024),
    (1104, 944),
    (1184, 880),
    (1248, 832),
    (1328, 800),
    (1392, 752),
    (1456, 720),
    (1504, 688),
    (1568, 672),
)
"""(width, height) of the about-one-megapixel sizes Kontext prefers (BFL's flux util, ComfyUI's list)."""

REFERENCE_METHODS = ["offset", "index", "uxo/uno", "index_timestep_zero"]


class ReferenceLatent:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING", {})}, "optional": {"latent": ("LATENT", {})}}

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "advanced/conditioning/edit_models"
    DESCRIPTION = (
        "This node sets the guiding latent for an edit model. If the model supports it you can chain "
        "multiple to set multiple reference images."
    )

    def append(self, conditioning: Conditioning, latent: Latent | None = None) -> tuple[Conditioning]:
        """Each entry with the latent after any references it already has (none given: unchanged)."""
        if latent is None:
            return (conditioning,)
        return (
            [
                [
                    tokens,
                    {
                        **options,
                        "reference_latents": [*options.get("reference_latents", []), latent["samples"]],
                    },
                ]
                for tokens, options in conditioning
            ],
        )


class FluxKontextMultiReferenceLatentMethod:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING", {}),
                "reference_latents_method": ("COMBO", {"multiselect": False, "options": REFERENCE_METHODS}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "advanced/conditioning/flux"

    def append(self, conditioning: Conditioning, reference_latents_method: str) -> tuple[Conditioning]:
        """How the model places the references (UNO's and USO's placement is one method, "uxo")."""
        method = "uxo" if reference_latents_method == "uxo/uno" else reference_latents_method
        return (set_values(conditioning, {"reference_latents_method": method}),)


def kontext_size(width: int, height: int) -> tuple[int, int]:
    """The preferred (width, height) whose aspect ratio is nearest the image's (the first on a tie)."""
    aspect = width / height
    return min(KONTEXT_RESOLUTIONS, key=lambda size: abs(aspect - size[0] / size[1]))


class FluxKontextImageScale:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": ("IMAGE", {})}}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "scale"
    CATEGORY = "advanced/conditioning/flux"
    DESCRIPTION = "This node resizes the image to one that is more optimal for flux kontext."

    def scale(self, image: torch.Tensor) -> tuple[torch.Tensor]:
        """The image cropped to the nearest preferred aspect (centred) and resized to it with Lanczos."""
        width, height = kontext_size(image.shape[2], image.shape[1])
        return (resize(image.movedim(-1, 1), width, height, "lanczos", "center").movedim(1, -1),)


NODE_CLASS_MAPPINGS = {
    "ReferenceLatent": ReferenceLatent,
    "FluxKontextMultiReferenceLatentMethod": FluxKontextMultiReferenceLatentMethod,
    "FluxKontextImageScale": FluxKontextImageScale,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ReferenceLatent": "ReferenceLatent",
    "FluxKontextMultiReferenceLatentMethod": "Edit Model Reference Method",
    "FluxKontextImageScale": "FluxKontextImageScale",
}
