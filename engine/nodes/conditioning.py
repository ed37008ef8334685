"""Conditioning nodes: CLIPTextEncode, FluxGuidance and ConditioningZeroOut, as ComfyUI declares them.

CONDITIONING is a list of `[cond [1, tokens, width], options]` pairs. A node never changes the list
or the options it was given (an upstream result may be cached and shared); it returns new ones.
"""

from __future__ import annotations

from typing import Any

import torch

from engine.diffusion.protocols import Conditioning
from engine.diffusion.text_encoders import CLIP


class CLIPTextEncode:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "text": (
                    "STRING",
                    {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."},
                ),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("A conditioning containing the embedded text used to guide the diffusion model.",)
    FUNCTION = "encode"
    CATEGORY = "conditioning"
    DESCRIPTION = (
        "Encodes a text prompt with the CLIP's text encoders into the conditioning that guides the diffusion "
        "model. (text:1.2) weights a part of the prompt, (text) multiplies its weight by 1.1."
    )

    def encode(self, clip: CLIP | None, text: str) -> tuple[Conditioning]:
        if clip is None:
            raise ValueError(
                "the clip input is None: the checkpoint loaded upstream holds no text encoder; load one with "
                "CLIPLoader or DualCLIPLoader"
            )
        return (clip.encode_from_tokens_scheduled(clip.tokenize(text)),)


class FluxGuidance:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("CONDITIONING",)
    FUNCTION = "append"
    CATEGORY = "advanced/conditioning/flux"
    DESCRIPTION = (
        "Sets the guidance strength that guidance-distilled Flux models (dev) take as an input; "
        "schnell has no guidance input and ignores it."
    )

    def append(self, conditioning: Conditioning, guidance: float) -> tuple[Conditioning]:
        return ([[cond, {**options, "guidance": guidance}] for cond, options in conditioning],)


class ConditioningZeroOut:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",)}}

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("CONDITIONING",)
    FUNCTION = "zero_out"
    CATEGORY = "advanced/conditioning"
    DESCRIPTION = (
        "Replaces the text states and the pooled vector with zeros of the same shapes: the 'no prompt' "
        "conditioning, often used as the negative for Flux."
    )

    def zero_out(self, conditioning: Conditioning) -> tuple[Conditioning]:
        zeroed = []
        for cond, options in conditioning:
            pooled = options.get("pooled_output")
            if pooled is not None:
                options = {**options, "pooled_output": torch.zeros_like(pooled)}
            zeroed.append([torch.zeros_like(cond), dict(options)])
        return (zeroed,)


NODE_CLASS_MAPPINGS = {
    "CLIPTextEncode": CLIPTextEncode,
    "FluxGuidance": FluxGuidance,
    "ConditioningZeroOut": ConditioningZeroOut,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CLIPTextEncode": "CLIP Text Encode (Prompt)",
    "FluxGuidance": "FluxGuidance",
    "ConditioningZeroOut": "ConditioningZeroOut",
}
