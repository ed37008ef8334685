"""CLIP_VISION: a SigLIP vision tower (Flux Redux's `sigclip_vision_patch14_384.safetensors`) and what
encoding an image with it gives (CLIP_VISION_OUTPUT).

The file holds transformers' SiglipVisionModel keys (`vision_model.embeddings.patch_embedding.weight`,
...), as ComfyUI reads them. Its shapes give the widths, depth, patch size and image size; the head count
is not in the weights, so it comes from SigLIP's head width (72: so400m has 1152 / 16). The attention-
pooling head (`vision_model.head.*`) is not used by ComfyUI's encoder and is not loaded. Images are
prepared as ComfyUI's clip_preprocess does: resized (bicubic, antialiased) so the short side is the model's
image size and center-cropped ("center"), or squashed to a square ("none"), quantised to 8 bits and
normalised with SigLIP's mean and std (0.5).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import SiglipVisionConfig, SiglipVisionModel

from engine.diffusion.model_manager import ModelKey, ModelManager
from engine.diffusion.safetensors_file import TensorInfo, WeightsFileError, load_tensors, read_header
from engine.diffusion.weights import count_blocks

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)
SIGLIP_HEAD_WIDTH = 72
IMAGE_SIZES = {(27, 14): 384}
"""(patches per side, patch size) -> image size, where patches do not tile the image exactly: so400m reads
384 pixels in 27 patches of 14, the last 6 pixels falling outside them. Elsewhere it is patches x size."""
PREFIX = "vision_model."
"""Where the file keeps the tower: transformers' SiglipVisionModel keys its own state without it."""
EMBEDDINGS = PREFIX + "embeddings."
LAYERS = PREFIX + "encoder.layers."
HEAD = "head."


@dataclass(frozen=True)
class ClipVisionOutput:
    """ComfyUI's CLIP_VISION_OUTPUT for a SigLIP tower, on the CPU in float32.

    As in ComfyUI, SigLIP has no projection: `image_embeds` is the post-layernorm sequence, the same as
    `last_hidden_state`. Indexing by name (`output["last_hidden_state"]`) works as on ComfyUI's object.
    """

    last_hidden_state: torch.Tensor
    """[B, patches, width] after the final layer norm: what Redux projects."""
    image_embeds: torch.Tensor
    penultimate_hidden_states: torch.Tensor
    """[B, patches, width] out of the second-to-last layer, before any norm."""
    all_hidden_states: torch.Tensor
    """[B, layers, patches, width]: every layer's output."""

    def __getitem__(self, key: str) -> torch.Tensor:
        value = getattr(self, key)
        assert isinstance(value, torch.Tensor)
        return value


def siglip_config(tensors: Mapping[str, TensorInfo], name: str) -> SiglipVisionConfig:
    """The SigLIP vision config a file's shapes describe; a file of another kind is refused by name."""
    patch = tensors.get(EMBEDDINGS + "patch_embedding.weight")
    positions = tensors.get(EMBEDDINGS + "position_embedding.weight")
    fc1 = tensors.get(LAYERS + "0.mlp.fc1.weight")
    if patch is None or positions is None or fc1 is None or EMBEDDINGS + "class_embedding" in tensors:
        raise WeightsFileError(
            f"{name}: not a SigLIP vision model (vision_model.embeddings.patch_embedding.weight and "
            "position_embedding.weight without a class embedding); only SigLIP towers such as Flux Redux's "
            "sigclip_vision_patch14_384.safetensors are supported"
        )
    hidden, channels, patch_size = patch.shape[0], patch.shape[1], patch.shape[2]
    side = math.isqrt(positions.shape[0])
    if side * side != positions.shape[0] or hidden % SIGLIP_HEAD_WIDTH:
        raise WeightsFileError(
            f"{name}: {positions.shape[0]} positions of width {hidden} are not a SigLIP square grid with "
            f"{SIGLIP_HEAD_WIDTH}-wide heads"
        )
    return SiglipVisionConfig(
        hidden_size=hidden,
        intermediate_size=fc1.shape[0],
        num_hidden_layers=count_blocks(tensors, LAYERS),
        num_attention_heads=hidden // SIGLIP_HEAD_WIDTH,
        num_channels=channels,
        image_size=IMAGE_SIZES.get((side, patch_size), side * patch_size),
        patch_size=patch_size,
        vision_use_head=False,
    )


def load_exactly(
    name: str, module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype
) -> None:
    """Give a module built on the meta device exactly `state_dict`'s tensors, in `dtype`; a file whose
    tensors do not fit is refused by name."""
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise WeightsFileError(
            f"{name}: the file's tensors do not fit the model its shapes describe "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    try:
        module.load_state_dict({k: t.to(dtype) for k, t in state_dict.items()}, strict=True, assign=True)
    except RuntimeError as error:
        raise WeightsFileError(f"{name}: the file's tensors do not fit the model: {error}") from None


def preprocess(
    image: torch.Tensor,
    size: int,
    crop: bool,
    mean: tuple[float, ...] = SIGLIP_MEAN,
    std: tuple[float, ...] = SIGLIP_STD,
) -> torch.Tensor:
    """IMAGE [B, H, W, C] in 0..1 -> normalised pixels [B, 3, size, size], as ComfyUI's clip_preprocess."""
    pixels = image[..., :3].movedim(-1, 1).float()
    height, width = pixels.shape[-2:]
    if (height, width) != (size, size):
        if crop:
            scale = size / min(height, width)
            scaled = (round(scale * height), round(scale * width))
        else:
            scaled = (size, size)
        pixels = F.interpolate(pixels, size=scaled, mode="bicubic", antialias=True)
        top, left = (pixels.shape[-2] - size) // 2, (pixels.shape[-1] - size) // 2
        pixels = pixels[..., top : top + size, left : left + size]
    pixels = torch.clip(255.0 * pixels, 0, 255).round() / 255.0
    return (pixels - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


class ClipVision:
    """A SigLIP vision model file; its module is kept by the model manager."""

    def __init__(self, path: Path, manager: ModelManager) -> None:
        self.path = path
        self.manager = manager
        self.config = siglip_config(read_header(path).tensors, path.name)
        self.key = ModelKey.for_file(path, "clip_vision", dtype=str(manager.dtype))

    @property
    def image_size(self) -> int:
        size = self.config.image_size
        assert isinstance(size, int), "siglip_config sets one side"
        return size

    def module(self) -> SiglipVisionModel:
        return self.manager.load(self.key, self._build)

    def _build(self) -> SiglipVisionModel:
        tensors = {
            name: tensor
            for name, tensor in load_tensors(self.path, PREFIX).items()
            if not name.startswith(HEAD)
        }
        with torch.device("meta"):
            module = SiglipVisionModel(self.config)
        load_exactly(f"{self.path.name} (SigLIP vision)", module, tensors, self.manager.dtype)
        embeddings = module.embeddings
        # A buffer outside the state dict: built on the meta device, so it is made here.
        embeddings.register_buffer(
            "position_ids", torch.arange(embeddings.num_positions).expand((1, -1)), persistent=False
        )
        return module

    def encode_image(self, image: torch.Tensor, crop: bool = True) -> ClipVisionOutput:
        module = self.module()
        pixels = preprocess(image, self.image_size, crop)
        with self.manager.out_of_memory_guard("encoding an image with CLIP vision"), torch.no_grad():
            out = module(
                pixel_values=pixels.to(self.manager.device, self.manager.dtype), output_hidden_states=True
            )
        last = out.last_hidden_state.float().cpu()
        layers = torch.stack(out.hidden_states[1:], dim=1).float().cpu()
        return ClipVisionOutput(
            last_hidden_state=last,
            image_embeds=last,
            penultimate_hidden_states=layers[:, -2],
            all_hidden_states=layers,
        )


def load_clip_vision(path: str | Path, manager: ModelManager) -> ClipVision:
    clip_vision = ClipVision(Path(path), manager)
    clip_vision.module()
    return clip_vision
