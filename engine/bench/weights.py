"""Random weights of the benchmarked models, in ComfyUI's folder layout, at full or tiny size.

Full size is the published models': Flux.1 dev and schnell (diffusers' FluxTransformer2DModel defaults:
19 double and 38 single blocks, 3072 wide), AuraFlow v0.3 (4 + 32 layers, 12 heads of 256, a 96 x 96
position table), the Flux AE and SDXL's VAE, CLIP-L (openai/clip-vit-large-patch14's text tower),
T5-XXL (google/t5-v1_1-xxl's encoder) and AuraFlow's Pile-T5-XL (a UMT5-style encoder, 2048 wide, 24
layers). Small is the test models' toy widths (engine.diffusion.test_models), for a machine without
CUDA. Both are written by the same code under the same file names the endpoints' graphs load.

Files are written once into a cache folder and reused while their layout matches. A full-size file is
tens of GB, so each is streamed tensor by tensor (random values made on the GPU when there is one, with
the test models' initialisation: matrices scaled by their fan-in, norm scales near one), never held
whole in memory, and written under a temporary name that is renamed when complete. Values are bf16.
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from engine.diffusion import auraflow, autoencoder, flux
from engine.diffusion.auraflow import AuraFlowConfig
from engine.diffusion.autoencoder import AutoencoderConfig
from engine.diffusion.flux import FluxConfig
from engine.diffusion.safetensors_file import RANDOM_TEST_WEIGHTS_METADATA, WeightsFileError, read_header
from engine.diffusion.test_models import (
    TINY_AURAFLOW,
    TINY_FLUX_AE,
    TINY_FLUX_DEV,
    TINY_FLUX_SCHNELL,
    TINY_SDXL_VAE,
    random_tensor,
)
from engine.diffusion.text_encoders import CHECKPOINT_PREFIXES, TextEncoderFamily, TextEncoderSpec
from engine.diffusion.text_encoders.clip_l import ClipLConfig
from engine.diffusion.text_encoders.detect import text_encoder_layout
from engine.diffusion.text_encoders.t5 import T5EncoderConfig
from engine.diffusion.text_encoders.test_files import TINY_SPECS, write_test_tokenizers

Size = Literal["small", "full"]
SIZES: tuple[Size, ...] = ("small", "full")

DTYPE = torch.bfloat16
SAFETENSORS_DTYPE = "BF16"
HEADER_ALIGNMENT = 8
SIZE_METADATA_KEY = "engine.bench.size"


@dataclass(frozen=True)
class ModelSizes:
    """Every model the three endpoints load, at one size, and the image side they are run at."""

    name: Size
    image_side: int
    flux_schnell: FluxConfig
    flux_dev: FluxConfig
    auraflow: AuraFlowConfig
    flux_ae: AutoencoderConfig
    sdxl_vae: AutoencoderConfig
    text_encoders: Mapping[TextEncoderFamily, TextEncoderSpec]


FULL_TEXT_ENCODERS: dict[TextEncoderFamily, TextEncoderSpec] = {
    "clip_l": TextEncoderSpec(
        "clip_l",
        ClipLConfig(
            vocab_size=49408,
            max_positions=77,
            hidden_size=768,
            intermediate_size=3072,
            num_layers=12,
            projection_dim=768,
        ),
    ),
    "t5xxl": TextEncoderSpec(
        "t5xxl",
        T5EncoderConfig(
            vocab_size=32128,
            d_model=4096,
            d_kv=64,
            d_ff=10240,
            num_layers=24,
            num_heads=64,
            relative_attention_num_buckets=32,
            bias_per_layer=False,
        ),
    ),
    "pile_t5xl": TextEncoderSpec(
        "pile_t5xl",
        T5EncoderConfig(
            vocab_size=32128,
            d_model=2048,
            d_kv=64,
            d_ff=5120,
            num_layers=24,
            num_heads=32,
            relative_attention_num_buckets=32,
            bias_per_layer=True,
        ),
    ),
}
"""The published encoders' shapes (their Hugging Face configs), which the files do not name."""

FULL = ModelSizes(
    name="full",
    image_side=1024,
    flux_schnell=FluxConfig(),
    flux_dev=FluxConfig(guidance_embed=True),
    auraflow=AuraFlowConfig(),
    flux_ae=AutoencoderConfig(latent_channels=16, use_quant_conv=False),
    sdxl_vae=AutoencoderConfig(),
    text_encoders=FULL_TEXT_ENCODERS,
)
SMALL = ModelSizes(
    name="small",
    image_side=64,
    flux_schnell=TINY_FLUX_SCHNELL,
    flux_dev=TINY_FLUX_DEV,
    auraflow=TINY_AURAFLOW,
    flux_ae=TINY_FLUX_AE,
    sdxl_vae=TINY_SDXL_VAE,
    text_encoders=TINY_SPECS,
)
MODEL_SIZES: dict[Size, ModelSizes] = {"small": SMALL, "full": FULL}


@dataclass(frozen=True)
class WeightsFile:
    """One file the graphs load: where it goes under the models folder, and its tensors with shapes."""

    relative_path: str
    """Under the models folder, e.g. "diffusion_models/flux1-dev.safetensors"."""
    layout: Mapping[str, tuple[int, ...]]
    seed: int

    @property
    def nbytes(self) -> int:
        return sum(math.prod(shape) for shape in self.layout.values()) * DTYPE.itemsize


def _prefixed(prefix: str, layout: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    return {prefix + name: shape for name, shape in layout.items()}


def weight_files(sizes: ModelSizes) -> dict[str, WeightsFile]:
    """Every file, by a short name the endpoint plan uses."""
    encoders = sizes.text_encoders
    aura = {
        **_prefixed("model.", auraflow.layout(sizes.auraflow)),
        **_prefixed(CHECKPOINT_PREFIXES["pile_t5xl"], text_encoder_layout(encoders["pile_t5xl"])),
        **_prefixed("vae.", autoencoder.layout(sizes.sdxl_vae)),
    }
    files = [
        ("aura_flow", "checkpoints/aura_flow_0.3.safetensors", aura, 10),
        ("flux_schnell", "diffusion_models/flux1-schnell.safetensors", flux.layout(sizes.flux_schnell), 20),
        ("flux_dev", "diffusion_models/flux1-dev.safetensors", flux.layout(sizes.flux_dev), 21),
        ("flux_ae", "vae/ae.safetensors", autoencoder.layout(sizes.flux_ae), 22),
        ("clip_l", "text_encoders/clip_l.safetensors", text_encoder_layout(encoders["clip_l"]), 0),
        ("t5xxl", "text_encoders/t5xxl_fp16.safetensors", text_encoder_layout(encoders["t5xxl"]), 1),
    ]
    return {key: WeightsFile(path, layout, seed) for key, path, layout, seed in files}


ENDPOINT_FILES: dict[str, tuple[str, ...]] = {
    "flux-schnell": ("flux_schnell", "t5xxl", "clip_l", "flux_ae"),
    "flux-dev": ("flux_dev", "t5xxl", "clip_l", "flux_ae"),
    "aura-flow": ("aura_flow",),
}
"""The files each endpoint's graph loads (graphs/*.json)."""


@dataclass
class WrittenFile:
    relative_path: str
    nbytes: int
    seconds: float
    """Time to write it; 0 when an earlier run's file was reused."""
    reused: bool


class WeightsCache:
    """The cache folder of one size: `<root>/<size>/models` in ComfyUI's layout, with tokenizers."""

    def __init__(self, root: Path, sizes: ModelSizes, device: torch.device) -> None:
        self.sizes = sizes
        self.models_dir = root / sizes.name / "models"
        self.device = device
        self.files = weight_files(sizes)

    def path(self, key: str) -> Path:
        return self.models_dir / self.files[key].relative_path

    def ensure(self, endpoint: str) -> list[WrittenFile]:
        """Write the endpoint's files that are missing (or of another layout), and the tokenizers."""
        tokenizers = self.models_dir / "text_encoders"
        if not (tokenizers / "tokenizers").is_dir():
            write_test_tokenizers(tokenizers)
        return [self._ensure_file(key) for key in ENDPOINT_FILES[endpoint]]

    def evict(self, done: str, remaining: tuple[str, ...]) -> None:
        """Delete the files of `done` that no endpoint in `remaining` loads (disk is bounded)."""
        keep = {key for endpoint in remaining for key in ENDPOINT_FILES[endpoint]}
        for key in ENDPOINT_FILES[done]:
            if key not in keep:
                self.path(key).unlink(missing_ok=True)

    def _ensure_file(self, key: str) -> WrittenFile:
        spec, path = self.files[key], self.path(key)
        if _holds_layout(path, spec.layout):
            return WrittenFile(spec.relative_path, spec.nbytes, 0.0, reused=True)
        started = time.perf_counter()
        generator = torch.Generator(self.device).manual_seed(spec.seed)
        write_streamed(path, spec.layout, generator, {SIZE_METADATA_KEY: self.sizes.name})
        return WrittenFile(spec.relative_path, spec.nbytes, time.perf_counter() - started, reused=False)


def _holds_layout(path: Path, layout: Mapping[str, tuple[int, ...]]) -> bool:
    if not path.is_file():
        return False
    try:
        header = read_header(path)
    except WeightsFileError:
        return False
    found = {name: (info.dtype, info.shape) for name, info in header.tensors.items()}
    return found == {name: (SAFETENSORS_DTYPE, tuple(shape)) for name, shape in layout.items()}


def write_streamed(
    path: Path,
    layout: Mapping[str, tuple[int, ...]],
    generator: torch.Generator,
    metadata: Mapping[str, str] = {},
) -> None:
    """A safetensors file of random bf16 tensors, made and written one at a time.

    The format is an 8-byte little-endian header length, a JSON header (each tensor's dtype, shape and
    byte span; padded with spaces to 8 bytes) and the tensors' bytes in header order. Marked as random
    test weights, so the engine announces them wherever they are loaded.
    """
    header: dict[str, object] = {"__metadata__": {**RANDOM_TEST_WEIGHTS_METADATA, **metadata}}
    offset = 0
    for name, shape in layout.items():
        nbytes = math.prod(shape) * DTYPE.itemsize
        header[name] = {
            "dtype": SAFETENSORS_DTYPE,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % HEADER_ALIGNMENT)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name, shape in layout.items():
            values = random_tensor(name, shape, generator).to(DTYPE).cpu()
            f.write(values.reshape(-1).view(torch.uint8).numpy().data)
    partial.replace(path)
