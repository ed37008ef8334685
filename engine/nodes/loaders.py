"""Model loader nodes: CheckpointLoaderSimple, UNETLoader, VAELoader, LoraLoader(ModelOnly), with
ComfyUI's inputs.

The file lists come from the model folders each time INPUT_TYPES is asked (so a new file shows up
without a restart); a name a graph gives is looked up in its folder and can never leave it. Each loader
of weights asks for the model manager in its constructor (`models`), which the executor passes in; the
LoRA loaders need none, since they return views of the models they are given (lora.patches).
"""

from __future__ import annotations

from typing import Any

from engine import folders
from engine.diffusion.diffusion_model import LoadedDiffusionModel
from engine.diffusion.loading import WEIGHT_DTYPES, load_checkpoint, load_diffusion_model, load_vae
from engine.diffusion.lora.apply import apply_lora, read_lora
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.text_encoders import CLIP
from engine.diffusion.vae import VAE


class ModelLoader:
    """A node that loads weights: they are kept, shared and evicted by the engine's model manager."""

    def __init__(self, models: ModelManager) -> None:
        self.models = models


class CheckpointLoaderSimple(ModelLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "ckpt_name": (
                    folders.get_filename_list("checkpoints"),
                    {"tooltip": "The name of the checkpoint (model) to load."},
                ),
            }
        }

    RETURN_TYPES = ("MODEL", "CLIP", "VAE")
    RETURN_NAMES = ("MODEL", "CLIP", "VAE")
    OUTPUT_TOOLTIPS = (
        "The model used for denoising latents.",
        "The CLIP model used for encoding text prompts.",
        "The VAE model used for encoding and decoding images to and from latent space.",
    )
    FUNCTION = "load_checkpoint"
    CATEGORY = "loaders"
    DESCRIPTION = "Loads a diffusion model checkpoint, diffusion models are used to denoise latents."

    def load_checkpoint(self, ckpt_name: str) -> tuple[LoadedDiffusionModel, CLIP | None, VAE | None]:
        path = folders.get_full_path("checkpoints", ckpt_name)
        return load_checkpoint(
            path, tokenizer_roots=folders.get_folder_paths("text_encoders"), manager=self.models
        )


class UNETLoader(ModelLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "unet_name": (folders.get_filename_list("diffusion_models"),),
                "weight_dtype": (list(WEIGHT_DTYPES),),
            }
        }

    RETURN_TYPES = ("MODEL",)
    RETURN_NAMES = ("MODEL",)
    FUNCTION = "load_unet"
    CATEGORY = "advanced/loaders"

    def load_unet(self, unet_name: str, weight_dtype: str) -> tuple[LoadedDiffusionModel]:
        path = folders.get_full_path("diffusion_models", unet_name)
        return (load_diffusion_model(path, weight_dtype, manager=self.models),)


class VAELoader(ModelLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"vae_name": (folders.get_filename_list("vae"),)}}

    RETURN_TYPES = ("VAE",)
    RETURN_NAMES = ("VAE",)
    FUNCTION = "load_vae"
    CATEGORY = "loaders"

    def load_vae(self, vae_name: str) -> tuple[VAE]:
        return (load_vae(folders.get_full_path("vae", vae_name), manager=self.models),)


LORA_STRENGTH = {"default": 1.0, "min": -100.0, "max": 100.0, "step": 0.01}

LORA_DESCRIPTION = (
    "LoRAs are used to modify diffusion and CLIP models, altering the way in which latents are denoised "
    "such as applying styles. Multiple LoRA nodes can be linked together."
)


def _lora_file_state(lora_name: str, **_: object) -> tuple[int, int]:
    """(modification time, size) of the named LoRA: a file replaced under the same name is read again
    instead of being served from the executor's cache."""
    stat = folders.get_full_path("loras", lora_name).stat()
    return stat.st_mtime_ns, stat.st_size


class LoraLoader:
    """Adds a LoRA's changes to a MODEL and a CLIP: new views sharing the resident weights (the inputs,
    maybe cached from earlier runs, stay as they were). Chained loaders stack their changes."""

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model the LoRA will be applied to."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model the LoRA will be applied to."}),
                "lora_name": (folders.get_filename_list("loras"), {"tooltip": "The name of the LoRA."}),
                "strength_model": (
                    "FLOAT",
                    {
                        **LORA_STRENGTH,
                        "tooltip": "How strongly to modify the diffusion model. This value can be negative.",
                    },
                ),
                "strength_clip": (
                    "FLOAT",
                    {
                        **LORA_STRENGTH,
                        "tooltip": "How strongly to modify the CLIP model. This value can be negative.",
                    },
                ),
            }
        }

    RETURN_TYPES: tuple[str, ...] = ("MODEL", "CLIP")
    OUTPUT_TOOLTIPS: tuple[str, ...] = ("The modified diffusion model.", "The modified CLIP model.")
    FUNCTION = "load_lora"
    CATEGORY = "loaders"
    DESCRIPTION = LORA_DESCRIPTION
    IS_CHANGED = staticmethod(_lora_file_state)

    def load_lora(
        self,
        model: LoadedDiffusionModel,
        clip: CLIP | None,
        lora_name: str,
        strength_model: float,
        strength_clip: float,
    ) -> tuple[LoadedDiffusionModel, CLIP | None]:
        if strength_model == 0 and strength_clip == 0:
            return model, clip  # as ComfyUI: nothing to add, the file is not even read
        lora = read_lora(folders.get_full_path("loras", lora_name))
        patched_model, patched_clip, report = apply_lora(lora, model, clip, strength_model, strength_clip)
        report.log()
        return patched_model, patched_clip


class LoraLoaderModelOnly(LoraLoader):
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "lora_name": (folders.get_filename_list("loras"),),
                "strength_model": ("FLOAT", dict(LORA_STRENGTH)),
            }
        }

    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The modified diffusion model.",)
    FUNCTION = "load_lora_model_only"

    def load_lora_model_only(
        self, model: LoadedDiffusionModel, lora_name: str, strength_model: float
    ) -> tuple[LoadedDiffusionModel]:
        return (self.load_lora(model, None, lora_name, strength_model, 0)[0],)


NODE_CLASS_MAPPINGS = {
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "UNETLoader": UNETLoader,
    "VAELoader": VAELoader,
    "LoraLoader": LoraLoader,
    "LoraLoaderModelOnly": LoraLoaderModelOnly,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "UNETLoader": "Load Diffusion Model",
    "VAELoader": "Load VAE",
    "LoraLoader": "Load LoRA",
}
