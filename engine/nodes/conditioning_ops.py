"""Conditioning nodes that combine entries or set options on them (area, mask, strength, timestep range,
guidance, an image to concatenate), and the Flux text encode with a prompt per encoder, as ComfyUI
declares them.

Setting an option is all these nodes do; what an option means while sampling is
engine.diffusion.sampling.conditioning's business. Like every conditioning node they return new lists
of new option dicts (an upstream result may be cached and shared); tensors are shared, never edited.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from engine.diffusion.protocols import Conditioning
from engine.diffusion.text_encoders import CLIP
from engine.diffusion.vae import VAE
from engine.nodes.latent import LATENT_DOWNSCALE, MAX_RESOLUTION

log = logging.getLogger(__name__)

Latent = dict[str, Any]

STRENGTH = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
FRACTION = ("FLOAT", {"default": 1.0, "min": 0, "max": 1.0, "step": 0.01})


def set_values(conditioning: Conditioning, values: Mapping[str, Any]) -> Conditioning:
    """Every entry with `values` added to (a copy of) its options."""
    return [[cond, {**options, **values}] for cond, options in conditioning]


class _ConditioningNode:
    RETURN_TYPES: tuple[str, ...] = ("CONDITIONING",)
    RETURN_NAMES: tuple[str, ...] = ("CONDITIONING",)
    CATEGORY = "conditioning"


class ConditioningCombine(_ConditioningNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning_1": ("CONDITIONING",), "conditioning_2": ("CONDITIONING",)}}

    FUNCTION = "combine"

    def combine(self, conditioning_1: Conditioning, conditioning_2: Conditioning) -> tuple[Conditioning]:
        """Both lists' entries: each is predicted separately and the predictions averaged while sampling."""
        return ([*conditioning_1, *conditioning_2],)


class ConditioningConcat(_ConditioningNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning_to": ("CONDITIONING",), "conditioning_from": ("CONDITIONING",)}}

    FUNCTION = "concat"

    def concat(self, conditioning_to: Conditioning, conditioning_from: Conditioning) -> tuple[Conditioning]:
        """Each entry of conditioning_to with the first entry of conditioning_from's tokens appended (its
        options are conditioning_to's)."""
        if len(conditioning_from) > 1:
            log.warning(
                "ConditioningConcat: conditioning_from has %d entries; only the first is used",
                len(conditioning_from),
            )
        tokens_from = conditioning_from[0][0]
        return ([[torch.cat((cond, tokens_from), 1), dict(options)] for cond, options in conditioning_to],)


class ConditioningAverage(_ConditioningNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning_to": ("CONDITIONING",),
                "conditioning_from": ("CONDITIONING",),
                "conditioning_to_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
            }
        }

    FUNCTION = "addWeighted"

    def addWeighted(
        self, conditioning_to: Conditioning, conditioning_from: Conditioning, conditioning_to_strength: float
    ) -> tuple[Conditioning]:
        """to * s + from * (1 - s), token by token: the first entry of conditioning_from is cut or padded
        with zeros to each entry's token count. Pooled vectors blend the same way when both have one; an
        entry without one takes conditioning_from's."""
        if len(conditioning_from) > 1:
            log.warning(
                "ConditioningAverage: conditioning_from has %d entries; only the first is used",
                len(conditioning_from),
            )
        strength = conditioning_to_strength
        tokens_from = conditioning_from[0][0]
        pooled_from = conditioning_from[0][1].get("pooled_output")
        out = []
        for cond, options in conditioning_to:
            matched = tokens_from[:, : cond.shape[1]]
            if matched.shape[1] < cond.shape[1]:
                missing = torch.zeros((matched.shape[0], cond.shape[1] - matched.shape[1], cond.shape[2]))
                matched = torch.cat([matched, missing.to(matched)], dim=1)
            averaged = cond * strength + matched * (1.0 - strength)
            options = dict(options)
            pooled_to = options.get("pooled_output", pooled_from)
            if pooled_from is not None and pooled_to is not None:
                options["pooled_output"] = pooled_to * strength + pooled_from * (1.0 - strength)
            elif pooled_from is not None:
                options["pooled_output"] = pooled_from
            out.append([averaged, options])
        return (out,)


class ConditioningSetArea(_ConditioningNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = ("INT", {"default": 64, "min": 64, "max": MAX_RESOLUTION, "step": 8})
        position = ("INT", {"default": 0, "min": 0, "max": MAX_RESOLUTION, "step": 8})
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "width": size,
                "height": size,
                "x": position,
                "y": position,
                "strength": STRENGTH,
            }
        }

    FUNCTION = "append"

    def append(
        self, conditioning: Conditioning, width: int, height: int, x: int, y: int, strength: float
    ) -> tuple[Conditioning]:
        """The prompt applies to a rectangle, stored in latent cells: area = (h, w, y, x) // 8."""
        area = (
            height // LATENT_DOWNSCALE,
            width // LATENT_DOWNSCALE,
            y // LATENT_DOWNSCALE,
            x // LATENT_DOWNSCALE,
        )
        return (set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaPercentage(_ConditioningNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        position = ("FLOAT", {"default": 0, "min": 0, "max": 1.0, "step": 0.01})
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "width": FRACTION,
                "height": FRACTION,
                "x": position,
                "y": position,
                "strength": STRENGTH,
            }
        }

    FUNCTION = "append"

    def append(
        self, conditioning: Conditioning, width: float, height: float, x: float, y: float, strength: float
    ) -> tuple[Conditioning]:
        """The rectangle as fractions of the image, resolved against the latent's size when sampling."""
        area = ("percentage", height, width, y, x)
        return (set_values(conditioning, {"area": area, "strength": strength, "set_area_to_bounds": False}),)


class ConditioningSetAreaStrength(_ConditioningNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"conditioning": ("CONDITIONING",), "strength": STRENGTH}}

    FUNCTION = "append"

    def append(self, conditioning: Conditioning, strength: float) -> tuple[Conditioning]:
        """The entry's weight in the average of the predictions of the entries covering a pixel."""
        return (set_values(conditioning, {"strength": strength}),)


class ConditioningSetMask(_ConditioningNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "mask": ("MASK",),
                "strength": STRENGTH,
                "set_cond_area": (["default", "mask bounds"],),
            }
        }

    FUNCTION = "append"

    def append(
        self, conditioning: Conditioning, mask: torch.Tensor, set_cond_area: str, strength: float
    ) -> tuple[Conditioning]:
        """The prompt applies where the mask is, weighted by it; with "mask bounds" the model is also run
        on just the mask's bounding box."""
        if mask.ndim < 3:
            mask = mask[None]
        values = {"mask": mask, "set_area_to_bounds": set_cond_area != "default", "mask_strength": strength}
        return (set_values(conditioning, values),)


class ConditioningSetTimestepRange(_ConditioningNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        fraction = {"min": 0.0, "max": 1.0, "step": 0.001}
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "start": ("FLOAT", {"default": 0.0, **fraction}),
                "end": ("FLOAT", {"default": 1.0, **fraction}),
            }
        }

    FUNCTION = "set_range"
    CATEGORY = "advanced/conditioning"

    def set_range(self, conditioning: Conditioning, start: float, end: float) -> tuple[Conditioning]:
        """The entry is used only from `start` to `end` of the schedule (fractions of the model's sigma
        range, 0 the noisiest)."""
        return (set_values(conditioning, {"start_percent": start, "end_percent": end}),)


class CLIPTextEncodeFlux(_ConditioningNode):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        prompt = ("STRING", {"multiline": True, "dynamicPrompts": True})
        return {
            "required": {
                "clip": ("CLIP", {}),
                "clip_l": prompt,
                "t5xxl": prompt,
                "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0, "step": 0.1}),
            }
        }

    FUNCTION = "encode"
    CATEGORY = "advanced/conditioning/flux"

    def encode(self, clip: CLIP | None, clip_l: str, t5xxl: str, guidance: float) -> tuple[Conditioning]:
        """clip_l's text for the CLIP-L encoder (the pooled vector), t5xxl's for T5-XXL (the token states),
        with Flux's distilled guidance strength."""
        if clip is None or "t5xxl" not in clip.encoders:
            raise ValueError(
                "CLIPTextEncodeFlux needs Flux's text encoders (clip_l and t5xxl, from DualCLIPLoader with "
                "type flux)"
            )
        tokens = clip.tokenize(clip_l)
        tokens["t5xxl"] = clip.tokenize(t5xxl)["t5xxl"]
        return (set_values(clip.encode_from_tokens_scheduled(tokens), {"guidance": guidance}),)


class InstructPixToPixConditioning:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "positive": ("CONDITIONING", {}),
                "negative": ("CONDITIONING", {}),
                "vae": ("VAE", {}),
                "pixels": ("IMAGE", {}),
            }
        }

    RETURN_TYPES = ("CONDITIONING", "CONDITIONING", "LATENT")
    RETURN_NAMES = ("positive", "negative", "latent")
    FUNCTION = "encode"
    CATEGORY = "conditioning/instructpix2pix"

    def encode(
        self, positive: Conditioning, negative: Conditioning, pixels: torch.Tensor, vae: VAE
    ) -> tuple[Conditioning, Conditioning, Latent]:
        """The image's latent attached to both prompts (an InstructPix2Pix model reads it beside the noisy
        latent), and an empty latent of its size to sample from."""
        image = vae.encode(pixels)
        values = {"concat_latent_image": image}
        return (
            set_values(positive, values),
            set_values(negative, values),
            {"samples": torch.zeros_like(image)},
        )


NODE_CLASS_MAPPINGS = {
    "ConditioningCombine": ConditioningCombine,
    "ConditioningConcat": ConditioningConcat,
    "ConditioningAverage": ConditioningAverage,
    "ConditioningSetArea": ConditioningSetArea,
    "ConditioningSetAreaPercentage": ConditioningSetAreaPercentage,
    "ConditioningSetAreaStrength": ConditioningSetAreaStrength,
    "ConditioningSetMask": ConditioningSetMask,
    "ConditioningSetTimestepRange": ConditioningSetTimestepRange,
    "CLIPTextEncodeFlux": CLIPTextEncodeFlux,
    "InstructPixToPixConditioning": InstructPixToPixConditioning,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ConditioningCombine": "Conditioning (Combine)",
    "ConditioningConcat": "Conditioning (Concat)",
    "ConditioningAverage": "ConditioningAverage",
    "ConditioningSetArea": "Conditioning (Set Area)",
    "ConditioningSetAreaPercentage": "Conditioning (Set Area with Percentage)",
    "ConditioningSetAreaStrength": "ConditioningSetAreaStrength",
    "ConditioningSetMask": "Conditioning (Set Mask)",
    "ConditioningSetTimestepRange": "ConditioningSetTimestepRange",
}
