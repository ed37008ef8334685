"""Model patch nodes: ModelPatchLoader and USOStyleReference (USO's style reference for Flux.1 dev), with
ComfyUI's inputs.

USO (ByteDance's unified style and subject model) adds to Flux.1 dev a LoRA (read by LoraLoaderModelOnly:
its `processor.qkv_lora1` keys are XLabs' layout), a reference latent placed the "uxo/uno" way for the
subject, and for a style image this projector: the image's SigLIP states become style tokens the model
puts before the text tokens (engine.diffusion.model_patch).
"""

from __future__ import annotations

from typing import Any

from engine import folders
from engine.diffusion.clip_vision import ClipVisionOutput
from engine.diffusion.diffusion_model import LoadedDiffusionModel
from engine.diffusion.flux import FluxConfig
from engine.diffusion.model_patch import ModelPatch, load_model_patch
from engine.nodes.loaders import ModelLoader


class ModelPatchLoader(ModelLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"name": (folders.get_filename_list("model_patches"),)}}

    RETURN_TYPES = ("MODEL_PATCH",)
    RETURN_NAMES = ("MODEL_PATCH",)
    FUNCTION = "load_model_patch"
    CATEGORY = "advanced/loaders"
    EXPERIMENTAL = True

    def load_model_patch(self, name: str) -> tuple[ModelPatch]:
        return (load_model_patch(folders.get_full_path("model_patches", name), self.models),)


class USOStyleReference:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "model_patch": ("MODEL_PATCH",),
                "clip_vision_output": ("CLIP_VISION_OUTPUT",),
            }
        }

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("MODEL",)
    FUNCTION = "apply_patch"
    CATEGORY = "advanced/model_patches/flux"
    EXPERIMENTAL = True

    def apply_patch(
        self, model: LoadedDiffusionModel, model_patch: ModelPatch, clip_vision_output: ClipVisionOutput
    ) -> tuple[LoadedDiffusionModel]:
        """A view of the model with the image's style tokens before its text tokens."""
        architecture = model.architecture
        if not isinstance(architecture, FluxConfig):
            raise ValueError(f"USO's style reference is for Flux.1 models; this MODEL is {architecture.name}")
        if model_patch.config.hidden_width != architecture.hidden_size:
            raise ValueError(
                f"{model_patch.path.name} makes {model_patch.config.hidden_width}-wide tokens; "
                f"this {architecture.name} model is {architecture.hidden_size} wide"
            )
        return (model.with_text_prefix(model_patch.style_tokens(clip_vision_output)),)


NODE_CLASS_MAPPINGS = {"ModelPatchLoader": ModelPatchLoader, "USOStyleReference": USOStyleReference}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ModelPatchLoader": "ModelPatchLoader",
    "USOStyleReference": "USOStyleReference",
}
