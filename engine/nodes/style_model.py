"""Flux Redux nodes: CLIPVisionLoader, CLIPVisionEncode, StyleModelLoader and StyleModelApply, with
ComfyUI's inputs.

StyleModelApply appends the style model's tokens for the encoded images to every conditioning entry's
text tokens (all images of a batch one after the other, as ComfyUI flattens them). "multiply" scales the
tokens by the strength. "attn_bias" in ComfyUI adds log(strength) to the attention paid to those tokens,
which needs an attention mask this engine's samplers do not take: at strength 1 (a bias of 0) it is a
plain append, any other strength is refused naming the alternative.
"""

from __future__ import annotations

from typing import Any

import torch

from engine import folders
from engine.diffusion.clip_vision import ClipVision, ClipVisionOutput, load_clip_vision
from engine.diffusion.protocols import Conditioning
from engine.diffusion.redux import StyleModel, load_style_model
from engine.nodes.loaders import ModelLoader


class CLIPVisionLoader(ModelLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"clip_name": (folders.get_filename_list("clip_vision"),)}}

    RETURN_TYPES = ("CLIP_VISION",)
    RETURN_NAMES = ("CLIP_VISION",)
    FUNCTION = "load_clip"
    CATEGORY = "loaders"

    def load_clip(self, clip_name: str) -> tuple[ClipVision]:
        return (load_clip_vision(folders.get_full_path("clip_vision", clip_name), self.models),)


class CLIPVisionEncode:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip_vision": ("CLIP_VISION",),
                "image": ("IMAGE",),
                "crop": (["center", "none"],),
            }
        }

    RETURN_TYPES = ("CLIP_VISION_OUTPUT",)
    RETURN_NAMES = ("CLIP_VISION_OUTPUT",)
    FUNCTION = "encode"
    CATEGORY = "conditioning"

    def encode(self, clip_vision: ClipVision, image: torch.Tensor, crop: str) -> tuple[ClipVisionOutput]:
        return (clip_vision.encode_image(image, crop=crop == "center"),)


class StyleModelLoader(ModelLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"style_model_name": (folders.get_filename_list("style_models"),)}}

    RETURN_TYPES = ("STYLE_MODEL",)
    RETURN_NAMES = ("STYLE_MODEL",)
    FUNCTION = "load_style_model"
    CATEGORY = "loaders"

    def load_style_model(self, style_model_name: str) -> tuple[StyleModel]:
        return (load_style_model(folders.get_full_path("style_models", style_model_name), self.models),)


class StyleModelApply:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "conditioning": ("CONDITIONING",),
                "style_model": ("STYLE_MODEL",),
                "clip_vision_output": ("CLIP_VISION_OUTPUT",),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001}),
                "strength_type": (["multiply", "attn_bias"],),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("CONDITIONING",)
    FUNCTION = "apply_stylemodel"
    CATEGORY = "conditioning/style_model"

    def apply_stylemodel(
        self,
        conditioning: Conditioning,
        style_model: StyleModel,
        clip_vision_output: ClipVisionOutput,
        strength: float,
        strength_type: str,
    ) -> tuple[Conditioning]:
        if strength_type == "attn_bias" and strength != 1.0:
            raise ValueError(
                "StyleModelApply: strength_type 'attn_bias' with a strength other than 1.0 needs an "
                "attention mask, which this engine's samplers do not support; use strength_type 'multiply'"
            )
        tokens = style_model.get_cond(clip_vision_output).flatten(0, 1).unsqueeze(0)
        if strength_type == "multiply":
            tokens = tokens * strength
        appended = []
        for cond, options in conditioning:
            if options.get("attention_mask") is not None:
                raise ValueError(
                    "StyleModelApply: the conditioning carries an attention mask, which this engine's "
                    "samplers do not support"
                )
            if cond.shape[-1] != tokens.shape[-1]:
                raise ValueError(
                    f"StyleModelApply: the style model makes {tokens.shape[-1]}-wide tokens, the "
                    f"conditioning's are {cond.shape[-1]} wide (Flux Redux goes with Flux conditioning)"
                )
            appended.append(
                [torch.cat((cond, tokens.to(cond.dtype).expand(cond.shape[0], -1, -1)), dim=1), dict(options)]
            )
        return (appended,)


NODE_CLASS_MAPPINGS = {
    "CLIPVisionLoader": CLIPVisionLoader,
    "CLIPVisionEncode": CLIPVisionEncode,
    "StyleModelLoader": StyleModelLoader,
    "StyleModelApply": StyleModelApply,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "CLIPVisionLoader": "Load CLIP Vision",
    "CLIPVisionEncode": "CLIP Vision Encode",
    "StyleModelLoader": "Load Style Model",
    "StyleModelApply": "Apply Style Model",
}
