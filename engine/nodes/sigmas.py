"""SIGMAS nodes: typing, splitting, flipping and editing a sigma schedule, as ComfyUI declares them.

SIGMAS is a 1-D float tensor, highest noise first, usually ending at 0; a node returns a new tensor and
never edits the one it was given (an upstream result may be cached and shared).
"""

from __future__ import annotations

import re
from typing import Any

import torch

NUMBER = re.compile(r"[-+]?\d*\.*\d+")
"""What ManualSigmas reads as a number (ComfyUI's pattern: signs, digits, dots; "1e-3" is read as 1, -3)."""


class ManualSigmas:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": ("STRING", {"default": "1, 0.5", "multiline": False})}}

    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("SIGMAS",)
    FUNCTION = "execute"
    CATEGORY = "_for_testing/custom_sampling"
    EXPERIMENTAL = True

    def execute(self, sigmas: str) -> tuple[torch.Tensor]:
        """Every number in the text, in order, whatever separates them."""
        return (torch.tensor([float(number) for number in NUMBER.findall(sigmas)], dtype=torch.float32),)


class SplitSigmas:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"sigmas": ("SIGMAS", {}), "step": ("INT", {"default": 0, "min": 0, "max": 10000})}
        }

    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/sigmas"

    def get_sigmas(self, sigmas: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The schedule up to and including sigma[step], and from sigma[step] on (they share that sigma)."""
        return sigmas[: step + 1].clone(), sigmas[step:].clone()


class SplitSigmasDenoise:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "sigmas": ("SIGMAS", {}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    RETURN_TYPES = ("SIGMAS", "SIGMAS")
    RETURN_NAMES = ("high_sigmas", "low_sigmas")
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/sigmas"

    def get_sigmas(self, sigmas: torch.Tensor, denoise: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The last round(steps * denoise) steps as low_sigmas, the steps before them as high_sigmas (the two
        share the sigma where they meet).

        As in ComfyUI, a split of 0 steps (denoise 0) leaves high_sigmas empty and low_sigmas the last sigma.
        """
        steps = max(sigmas.shape[-1] - 1, 0)
        low_steps = round(steps * denoise)
        high = sigmas[:-low_steps] if low_steps else sigmas[:0]
        return high.clone(), sigmas[-(low_steps + 1) :].clone()


class FlipSigmas:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sigmas": ("SIGMAS", {})}}

    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = "sampling/custom_sampling/sigmas"

    FIRST_SIGMA_FLOOR = 0.0001
    """A flipped schedule starting at 0 starts here instead (a step from sigma 0 is undefined)."""

    def get_sigmas(self, sigmas: torch.Tensor) -> tuple[torch.Tensor]:
        """The schedule reversed (lowest noise first), for sampling towards noise (unsampling)."""
        if sigmas.numel() == 0:
            return (sigmas,)
        flipped = sigmas.flip(0)
        if flipped[0] == 0:
            flipped[0] = self.FIRST_SIGMA_FLOOR
        return (flipped,)


class SetFirstSigma:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "sigmas": ("SIGMAS", {}),
                "sigma": (
                    "FLOAT",
                    {"default": 136.0, "min": 0.0, "max": 20000.0, "step": 0.001, "round": False},
                ),
            }
        }

    RETURN_TYPES = ("SIGMAS",)
    RETURN_NAMES = ("SIGMAS",)
    FUNCTION = "set_first_sigma"
    CATEGORY = "sampling/custom_sampling/sigmas"

    def set_first_sigma(self, sigmas: torch.Tensor, sigma: float) -> tuple[torch.Tensor]:
        changed = sigmas.clone()
        changed[0] = sigma
        return (changed,)


NODE_CLASS_MAPPINGS = {
    "ManualSigmas": ManualSigmas,
    "SplitSigmas": SplitSigmas,
    "SplitSigmasDenoise": SplitSigmasDenoise,
    "FlipSigmas": FlipSigmas,
    "SetFirstSigma": SetFirstSigma,
}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}
