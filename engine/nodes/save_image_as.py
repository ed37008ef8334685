"""SaveImageAs: the output node API requests end in, writing each image once in the format asked for.

ComfyUI's SaveImage writes PNGs with the whole graph embedded; an API answer must be webp, jpeg or png
at the client's quality and must not carry the endpoint's template, so endpoint prompts swap their
SaveImage for this node. Each image is encoded once, in memory, and those same bytes are written to the
output folder, whole or not at all (their size is reported, so the API can answer with a file size
without re-reading).
The prefix goes through `engine.folders`, which refuses any prefix that would leave the output folder.
"""

from __future__ import annotations

import io
from functools import partial
from typing import Any, BinaryIO

import numpy as np
from PIL import Image

from engine import folders
from engine.nodes.output_files import write_numbered

CONTENT_TYPES: dict[str, str] = {
    "webp": "image/webp",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
}
"""Formats this node writes, by the name requests use, and the content type each is served with."""

_PILLOW_FORMATS = {"webp": "WEBP", "jpg": "JPEG", "jpeg": "JPEG", "png": "PNG"}
PNG_COMPRESS_LEVEL = 4
"""ComfyUI's SaveImage level: PNG is lossless, so quality does not apply, only encoding speed."""


def to_pil(image: Any) -> Image.Image:
    """One IMAGE entry ([H, W, C] floats in 0..1, a tensor or an array) as 8-bit, as ComfyUI converts it."""
    if hasattr(image, "detach"):
        image = image.detach().float().cpu().numpy()
    pixels = np.clip(255.0 * np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    return Image.fromarray(pixels)


def encode(image: Image.Image, image_format: str, quality: int) -> bytes:
    """The file's bytes; no metadata (no prompt or workflow text chunks, no EXIF)."""
    if image_format in ("jpg", "jpeg") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        image.save(buffer, _PILLOW_FORMATS[image_format], quality=quality)
    return buffer.getvalue()


def _write_bytes(data: bytes, stream: BinaryIO) -> None:
    stream.write(data)


class SaveImageAs:
    CATEGORY = "image"
    FUNCTION = "save"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    DESCRIPTION = (
        "Saves images in the output folder as webp, jpeg or png at a chosen quality, without metadata."
    )

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": (
                    "STRING",
                    {"default": "ComfyUI", "tooltip": "Folder/name prefix inside the output folder."},
                ),
                "format": (list(CONTENT_TYPES), {"default": "webp"}),
                "quality": (
                    "INT",
                    {"default": 80, "min": 0, "max": 100, "tooltip": "Lossy quality; ignored for png."},
                ),
            }
        }

    def save(self, images: Any, filename_prefix: str, format: str, quality: int) -> dict[str, Any]:
        pictures = [to_pil(image) for image in images]
        if not pictures:
            return {"ui": {"images": []}}
        width, height = pictures[0].size
        path = folders.get_save_image_path(filename_prefix, folders.get_output_directory(), width, height)
        counter = path.counter
        results = []
        for picture in pictures:
            data = encode(picture, format, quality)
            written, used = write_numbered(
                path.folder, path.filename, counter, format, partial(_write_bytes, data)
            )
            counter = used + 1
            results.append(
                {
                    "filename": written.name,
                    "subfolder": path.subfolder,
                    "type": "output",
                    "format": format,
                    "content_type": CONTENT_TYPES[format],
                    "width": picture.width,
                    "height": picture.height,
                    "size": len(data),
                }
            )
        return {"ui": {"images": results}}


NODE_CLASS_MAPPINGS = {"SaveImageAs": SaveImageAs}
NODE_DISPLAY_NAME_MAPPINGS = {"SaveImageAs": "Save Image As (webp/jpeg/png)"}
