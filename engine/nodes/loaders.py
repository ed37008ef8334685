"""Model loader nodes: CheckpointLoaderSimple, UNETLoader, VAELoader, with ComfyUI's inputs.

The file lists come from the model folders each time INPUT_TYPES is asked (so a new file shows up
without a restart); a name a graph gives is looked up in its folder and can never leave it. Each loader
asks for the model manager in its constructor (`models`), which the executor passes in.
"""

from __future__ import annotations

from typing import Any

from engine import folders
from engine.diffusion.diffusion_model import LoadedDiffusionModel
from engine.diffusion.loading import WEIGHT_DTYPES, load_checkpoint, load_diffusion_model, load_vae
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


NODE_CLASS_MAPPINGS = {
    "CheckpointLoaderSimple": CheckpointLoaderSimple,
    "UNETLoader": UNETLoader,
    "VAELoader": VAELoader,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "CheckpointLoaderSimple": "Load Checkpoint",
    "UNETLoader": "Load Diffusion Model",
    "VAELoader": "Load VAE",
}
