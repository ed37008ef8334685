"""Image nodes: VAE decode and encode, empty images, and images in and out of the user's folders.

SaveImage writes what ComfyUI writes (PNG with the graph in its text chunks, `{prefix}_{counter:05}_.png`
numbering continuing after the highest existing file), so files move between the two freely; each file
appears whole or not at all (see output_files). Every name from a graph (a filename_prefix, an image to
load) is resolved inside its folder or refused.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import random
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, ImageSequence
from PIL.PngImagePlugin import PngInfo

from engine import folders
from engine.diffusion.vae import VAE
from engine.nodes.latent import MAX_RESOLUTION
from engine.nodes.output_files import write_numbered

SINGLE_FRAME_FORMATS = ("MPO",)
"""Multi-picture files whose extra frames are not a batch (a camera's depth or preview images)."""

NO_ALPHA_MASK_SIZE = 64
"""ComfyUI's mask for an image without alpha: 64x64 zeros."""


class VAEDecode:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image.",)
    FUNCTION = "decode"
    CATEGORY = "latent"
    DESCRIPTION = "Decodes latent images back into pixel space images."

    def decode(self, vae: VAE, samples: dict[str, torch.Tensor]) -> tuple[torch.Tensor]:
        return (vae.decode(samples["samples"]),)


class VAEEncode:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "latent"

    def encode(self, vae: VAE, pixels: torch.Tensor) -> tuple[dict[str, torch.Tensor]]:
        return ({"samples": vae.encode(pixels)},)


class EmptyImage:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "height": ("INT", {"default": 512, "min": 1, "max": MAX_RESOLUTION, "step": 1}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096}),
                "color": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFF, "step": 1, "display": "color"}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("IMAGE",)
    FUNCTION = "generate"
    CATEGORY = "image"

    def generate(self, width: int, height: int, batch_size: int = 1, color: int = 0) -> tuple[torch.Tensor]:
        rgb = (
            torch.tensor([(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=torch.float32)
            / 0xFF
        )
        return (rgb.expand(batch_size, height, width, 3).clone(),)


def png_metadata(prompt: Any, extra_pnginfo: dict[str, Any] | None) -> PngInfo:
    """The graph in PNG text chunks as ComfyUI writes it: "prompt", then one chunk per extra_pnginfo key
    (the editor sends "workflow"), each JSON, so dropping the file on an editor reopens its graph."""
    metadata = PngInfo()
    if prompt is not None:
        metadata.add_text("prompt", json.dumps(prompt))
    for key, value in (extra_pnginfo or {}).items():
        metadata.add_text(key, json.dumps(value))
    return metadata


def to_pil(image: torch.Tensor) -> Image.Image:
    """One IMAGE [H, W, C] in 0..1 as 8-bit, truncating as ComfyUI does (255 * x, clipped, floored)."""
    return Image.fromarray(np.clip(255.0 * image.cpu().numpy(), 0, 255).astype(np.uint8))


class SaveImage:
    """Writes each image of a batch as the next numbered PNG under the output folder."""

    folder_type = "output"
    compress_level = 4

    def __init__(self) -> None:
        self.prefix_append = ""

    def directory(self) -> Path:
        return folders.get_output_directory()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": (
                    "STRING",
                    {
                        "default": "ComfyUI",
                        "tooltip": "The prefix for the file to save. This may include formatting "
                        "information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to include "
                        "values from nodes.",
                    },
                ),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to your ComfyUI output directory."

    def save_images(
        self,
        images: torch.Tensor,
        filename_prefix: str = "ComfyUI",
        prompt: Any = None,
        extra_pnginfo: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        height, width = images.shape[1], images.shape[2]
        target = folders.get_save_image_path(
            filename_prefix + self.prefix_append, self.directory(), width, height
        )
        metadata = png_metadata(prompt, extra_pnginfo)
        counter = target.counter
        results = []
        for batch_number, image in enumerate(images):
            name = target.filename.replace("%batch_num%", str(batch_number))
            picture = to_pil(image)
            path, counter = write_numbered(
                target.folder,
                name,
                counter,
                "png",
                partial(picture.save, format="PNG", pnginfo=metadata, compress_level=self.compress_level),
            )
            results.append({"filename": path.name, "subfolder": target.subfolder, "type": self.folder_type})
            counter += 1
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    """Like SaveImage, into the temp folder (emptied between sessions), under a random suffix."""

    folder_type = "temp"
    compress_level = 1

    def __init__(self) -> None:
        self.prefix_append = "_temp_" + "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))

    def directory(self) -> Path:
        return folders.get_temp_directory()

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE",)},
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    DESCRIPTION = "Saves the input images to a temporary folder for display."


def input_images() -> list[str]:
    """The image files at the top of the input folder, as LoadImage lists them."""
    directory = folders.get_input_directory()
    if not directory.is_dir():
        return []
    names = [entry.name for entry in directory.iterdir() if entry.is_file()]
    return sorted(name for name in names if (mimetypes.guess_type(name)[0] or "").startswith("image/"))


class LoadImage:
    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"image": (input_images(), {"image_upload": True})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("IMAGE", "MASK")
    FUNCTION = "load_image"
    CATEGORY = "image"

    def load_image(self, image: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Every frame of the same size as the first as a batch; the mask is 1 where alpha is 0."""
        images: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        with Image.open(folders.get_annotated_filepath(image)) as picture:
            for frame in ImageSequence.Iterator(picture):
                frame = ImageOps.exif_transpose(frame)
                if frame.mode == "I":
                    frame = frame.point(lambda value: value * (1 / 255))
                rgb = frame.convert("RGB")
                if images and (rgb.width, rgb.height) != (images[0].shape[2], images[0].shape[1]):
                    continue
                images.append(torch.from_numpy(np.array(rgb).astype(np.float32) / 255.0)[None])
                masks.append(_mask(frame)[None])
            if len(images) > 1 and picture.format in SINGLE_FRAME_FORMATS:
                images, masks = images[:1], masks[:1]
        return torch.cat(images), torch.cat(masks)

    @classmethod
    def IS_CHANGED(cls, image: str) -> str:
        return hashlib.sha256(folders.get_annotated_filepath(image).read_bytes()).hexdigest()

    @classmethod
    def VALIDATE_INPUTS(cls, image: str) -> bool | str:
        if not folders.exists_annotated_filepath(image):
            return f"Invalid image file: {image}"
        return True


def _mask(frame: Image.Image) -> torch.Tensor:
    if "A" in frame.getbands():
        alpha = frame.getchannel("A")
    elif frame.mode == "P" and "transparency" in frame.info:
        alpha = frame.convert("RGBA").getchannel("A")
    else:
        return torch.zeros((NO_ALPHA_MASK_SIZE, NO_ALPHA_MASK_SIZE), dtype=torch.float32)
    return 1.0 - torch.from_numpy(np.array(alpha).astype(np.float32) / 255.0)


NODE_CLASS_MAPPINGS = {
    "VAEDecode": VAEDecode,
    "VAEEncode": VAEEncode,
    "EmptyImage": EmptyImage,
    "SaveImage": SaveImage,
    "PreviewImage": PreviewImage,
    "LoadImage": LoadImage,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "VAEDecode": "VAE Decode",
    "VAEEncode": "VAE Encode",
    "EmptyImage": "EmptyImage",
    "SaveImage": "Save Image",
    "PreviewImage": "Preview Image",
    "LoadImage": "Load Image",
}
