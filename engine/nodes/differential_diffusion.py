"""DifferentialDiffusion: a MODEL whose inpainting mask is thresholded per step (soft-mask inpainting).
The arithmetic is engine.diffusion.sampling.differential_diffusion."""

from __future__ import annotations

from typing import Any

from engine.diffusion.protocols import DiffusionModel
from engine.diffusion.sampling.differential_diffusion import DifferentialMask


class DifferentialDiffusion:
    CATEGORY = "_for_testing"
    FUNCTION = "apply"
    RETURN_TYPES = ("MODEL",)
    EXPERIMENTAL = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"model": ("MODEL",)},
            "optional": {"strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})},
        }

    def apply(self, model: DiffusionModel, strength: float = 1.0) -> tuple[DiffusionModel]:
        patched = model.clone()
        patched.denoise_mask_function = DifferentialMask(strength)
        return (patched,)


NODE_CLASS_MAPPINGS = {"DifferentialDiffusion": DifferentialDiffusion}
NODE_DISPLAY_NAME_MAPPINGS = {"DifferentialDiffusion": "Differential Diffusion"}
