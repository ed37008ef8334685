"""Text-encoder loader nodes: CLIPLoader and DualCLIPLoader, with ComfyUI's inputs and type lists.

The type lists are ComfyUI's, so any graph made for it validates here; the combinations this engine
serves are Flux (DualCLIPLoader, type flux, clip_l + t5xxl), AuraFlow's Pile-T5-XL (any type) and
CLIP-L alone (type stable_diffusion). Any other combination fails with a message that lists them.
"""

from __future__ import annotations

from typing import Any

from engine import folders
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.text_encoders import CLIP, TextEncoderSource, load_clip
from engine.nodes.loaders import ModelLoader

CLIP_TYPES = [
    "stable_diffusion",
    "stable_cascade",
    "sd3",
    "stable_audio",
    "mochi",
    "ltxv",
    "pixart",
    "cosmos",
    "lumina2",
    "wan",
    "hidream",
    "chroma",
    "ace",
    "omnigen2",
    "qwen_image",
    "hunyuan_image",
    "flux2",
    "ovis",
]

DUAL_CLIP_TYPES = [
    "sdxl",
    "sd3",
    "flux",
    "hunyuan_video",
    "hidream",
    "hunyuan_image",
    "hunyuan_video_15",
    "kandinsky5",
    "kandinsky5_image",
    "ltxv",
    "newbie",
]

DEVICES = ["default", "cpu"]


def _load(names: list[str], clip_type: str, device: str, models: ModelManager) -> CLIP:
    if device != "default":
        raise ValueError(
            f"device '{device}' is not supported: text encoders run on the engine's compute device and "
            "share its memory budget with the other models; set device to 'default'"
        )
    sources = [TextEncoderSource.from_file(folders.get_full_path("text_encoders", name)) for name in names]
    return load_clip(
        sources, clip_type, tokenizer_roots=folders.get_folder_paths("text_encoders"), manager=models
    )


class CLIPLoader(ModelLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "clip_name": (folders.get_filename_list("text_encoders"),),
                "type": (CLIP_TYPES,),
            },
            "optional": {"device": (DEVICES, {"advanced": True})},
        }

    RETURN_TYPES = ("CLIP",)
    RETURN_NAMES = ("CLIP",)
    FUNCTION = "load_clip"
    CATEGORY = "advanced/loaders"
    DESCRIPTION = (
        "Loads one text encoder from models/text_encoders, with its tokenizer from "
        "text_encoders/tokenizers/<family>/.\n\nServed here: a Pile-T5-XL file (AuraFlow's encoder, any "
        "type); clip_l with type stable_diffusion."
    )

    def load_clip(
        self, clip_name: str, type: str = "stable_diffusion", device: str = "default"
    ) -> tuple[CLIP]:
        return (_load([clip_name], type, device, self.models),)


class DualCLIPLoader(ModelLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        names = folders.get_filename_list("text_encoders")
        return {
            "required": {"clip_name1": (names,), "clip_name2": (names,), "type": (DUAL_CLIP_TYPES,)},
            "optional": {"device": (DEVICES, {"advanced": True})},
        }

    RETURN_TYPES = ("CLIP",)
    RETURN_NAMES = ("CLIP",)
    FUNCTION = "load_clip"
    CATEGORY = "advanced/loaders"
    DESCRIPTION = (
        "Loads two text encoders from models/text_encoders as one CLIP, with their tokenizers from "
        "text_encoders/tokenizers/<family>/.\n\nServed here: flux (clip_l and t5xxl, in either order)."
    )

    def load_clip(self, clip_name1: str, clip_name2: str, type: str, device: str = "default") -> tuple[CLIP]:
        return (_load([clip_name1, clip_name2], type, device, self.models),)


NODE_CLASS_MAPPINGS = {"CLIPLoader": CLIPLoader, "DualCLIPLoader": DualCLIPLoader}
NODE_DISPLAY_NAME_MAPPINGS = {"CLIPLoader": "Load CLIP", "DualCLIPLoader": "DualCLIPLoader"}
