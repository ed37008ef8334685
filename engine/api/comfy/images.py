"""The image work behind `/view` and the uploads: checking, masking, previews and channels (Pillow).

Every image here may come from a client, so each is opened with a short list of formats (Pillow would
otherwise hand an EPS file to Ghostscript), and its declared size is checked against a pixel bound
before any pixel is decoded: a few kilobytes of PNG can declare a 100,000 x 100,000 image. These
functions block; callers run them on a worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, PngImagePlugin

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""What an upload may be: the formats browsers and ComfyUI's LoadImage deal in."""
EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
"""What an uploaded file may be called: `/view` serves a file by the type its extension names, so an
image called `x.html` would be served as a page."""
PREVIEW_FORMATS = ("webp", "jpeg")
CHANNELS = ("rgba", "rgb", "a")
MASK_COMPRESS_LEVEL = 4


class ImageRefused(ValueError):
    """Not an image this server takes: unreadable, a format not in FORMATS, or too many pixels."""


@contextmanager
def open_image(source: Path | bytes, max_pixels: int) -> Iterator[Image.Image]:
    """The image, fully decoded, after its declared size was checked against `max_pixels`."""
    stream = io.BytesIO(source) if isinstance(source, bytes) else source.open("rb")
    with stream:
        try:
            image = Image.open(stream, formats=FORMATS)
        except Image.DecompressionBombError as exc:
            raise ImageRefused(f"the image declares too many pixels: {exc}") from exc
        except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, struct.error) on bad data
            raise ImageRefused(f"not an image of a known format ({', '.join(FORMATS)})") from exc
        with image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageRefused(
                    f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
                )
            try:
                image.load()
            except Exception as exc:  # truncated or corrupt data, whatever the decoder raised
                raise ImageRefused(f"the {image.format} image cannot be decoded: {exc}") from exc
            yield image


def check_image(data: bytes, max_pixels: int) -> None:
    """Raise ImageRefused unless `data` decodes to an image of at most `max_pixels`."""
    with open_image(data, max_pixels):
        pass


def apply_mask(original: Path, mask: bytes, max_pixels: int) -> bytes:
    """PNG bytes of `original` with its alpha channel replaced by the alpha of `mask` (the editor's mask
    editor sends the painted mask as the alpha of an RGBA image); the original's PNG text is kept."""
    with open_image(original, max_pixels) as base, open_image(mask, max_pixels) as painted:
        if base.size != painted.size:
            raise ImageRefused(
                f"the mask is {painted.size[0]}x{painted.size[1]} but the original image is "
                f"{base.size[0]}x{base.size[1]}"
            )
        info = PngImagePlugin.PngInfo()
        for key, value in getattr(base, "text", {}).items():
            info.add_text(key, value)
        result = base.convert("RGBA")
        result.putalpha(painted.convert("RGBA").getchannel("A"))
        buffer = io.BytesIO()
        result.save(buffer, format="PNG", compress_level=MASK_COMPRESS_LEVEL, pnginfo=info)
        return buffer.getvalue()


def preview(path: Path, image_format: str, quality: int, channel: str, max_pixels: int) -> bytes:
    """The image re-encoded as a smaller `image_format` (webp or jpeg) for the editor's thumbnails."""
    with open_image(path, max_pixels) as image:
        if image_format == "jpeg" or channel == "rgb":
            converted = image.convert("RGB")
        elif image.mode in ("RGB", "RGBA"):
            converted = image
        else:
            keeps_alpha = "A" in image.getbands() or "transparency" in image.info
            converted = image.convert("RGBA" if keeps_alpha else "RGB")
        buffer = io.BytesIO()
        converted.save(buffer, format=image_format.upper(), quality=quality)
        return buffer.getvalue()


def channel_png(path: Path, channel: str, max_pixels: int) -> bytes:
    """A PNG of the image's colour (`rgb`) or of its alpha (`a`: black pixels carrying the alpha, fully
    opaque when the image has none), as the mask editor asks for them."""
    with open_image(path, max_pixels) as image:
        if channel == "rgb":
            result = image.convert("RGB")
        else:
            alpha = image.getchannel("A") if "A" in image.getbands() else Image.new("L", image.size, 255)
            result = Image.new("RGBA", image.size)
            result.putalpha(alpha)
        buffer = io.BytesIO()
        result.save(buffer, format="PNG")
        return buffer.getvalue()
