"""Loading the MODEL, CLIP and VAE values of a graph from ComfyUI-layout weights files.

Diffusion models and VAEs are loaded here and now (onto the compute device, through the model manager),
so a broken or unrecognised file fails the loader node that named it rather than a sampler later on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from engine.diffusion.autoencoder import AutoencoderConfig
from engine.diffusion.detect import FileContents, Part, identify
from engine.diffusion.diffusion_model import Architecture, LoadedDiffusionModel
from engine.diffusion.flux import FluxConfig
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.safetensors_file import TORCH_DTYPES, TensorInfo, WeightsFileError, read_header
from engine.diffusion.text_encoders import CLIP, TextEncoderSource, load_clip
from engine.diffusion.vae import VAE

log = logging.getLogger(__name__)

WEIGHT_DTYPES: dict[str, torch.dtype | None] = {
    "default": None,
    "fp8_e4m3fn": torch.float8_e4m3fn,
    "fp8_e4m3fn_fast": torch.float8_e4m3fn,
    "fp8_e5m2": torch.float8_e5m2,
}
"""UNETLoader's weight_dtype choices -> the dtype weights are kept in (None: the file's, or the compute
dtype). `fp8_e4m3fn_fast` also multiplies in fp8, with per-row scales (engine.diffusion.fp8)."""

FAST_FP8 = "fp8_e4m3fn_fast"

FP8_DTYPES = (torch.float8_e4m3fn, torch.float8_e5m2)


def stored_fp8_dtype(tensors: Mapping[str, TensorInfo]) -> torch.dtype | None:
    """The fp8 dtype a file's weight matrices are stored in, if they are (an fp8 checkpoint)."""
    matrix_dtypes = {TORCH_DTYPES.get(info.dtype) for info in tensors.values() if len(info.shape) >= 2}
    return next((dtype for dtype in FP8_DTYPES if dtype in matrix_dtypes), None)


def weight_bytes(tensors: Mapping[str, TensorInfo], dtype: torch.dtype) -> int:
    return sum(math.prod(info.shape) for info in tensors.values()) * dtype.itemsize


def _missing(contents: FileContents, what: str) -> WeightsFileError:
    return WeightsFileError(f"{contents.path.name}: holds no {what} (it holds {contents.describe()})")


def _diffusion_model(
    path: Path, part: Part[Architecture], weight_dtype: str, manager: ModelManager
) -> LoadedDiffusionModel:
    if weight_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"unknown weight_dtype '{weight_dtype}'; expected one of {', '.join(WEIGHT_DTYPES)}")
    tensors = read_header(path).under(part.prefix)
    storage = WEIGHT_DTYPES[weight_dtype] or stored_fp8_dtype(tensors)
    model = LoadedDiffusionModel(
        path,
        part.prefix,
        part.config,
        manager,
        storage,
        weight_bytes(tensors, storage or manager.dtype),
        fast_fp8=weight_dtype == FAST_FP8,
    )
    model.module()
    return model


def _vae(path: Path, part: Part[AutoencoderConfig], manager: ModelManager) -> VAE:
    vae = VAE(path, part.prefix, part.config, manager)
    vae.module()
    return vae


def load_diffusion_model(
    path: str | Path, weight_dtype: str = "default", *, manager: ModelManager
) -> LoadedDiffusionModel:
    """The diffusion model in a file (a BFL Flux file, or the model part of any checkpoint)."""
    contents = identify(path)
    if contents.diffusion_model is None:
        raise _missing(contents, "diffusion model")
    return _diffusion_model(contents.path, contents.diffusion_model, weight_dtype, manager)


def load_vae(path: str | Path, *, manager: ModelManager) -> VAE:
    """The VAE in a file (`ae.safetensors`, an SDXL VAE, or the VAE part of a checkpoint)."""
    contents = identify(path)
    if contents.vae is None:
        raise _missing(contents, "VAE")
    return _vae(contents.path, contents.vae, manager)


def load_checkpoint(
    path: str | Path, tokenizer_roots: Sequence[Path] = (), *, manager: ModelManager
) -> tuple[LoadedDiffusionModel, CLIP | None, VAE | None]:
    """MODEL, CLIP and VAE from an all-in-one checkpoint, as CheckpointLoaderSimple returns them.

    A checkpoint without text encoders or without a VAE gives None for that part (as in ComfyUI, a
    separate loader then supplies it); one without a diffusion model is an error.
    """
    contents = identify(path)
    if contents.diffusion_model is None:
        raise _missing(contents, "diffusion model")
    model = _diffusion_model(contents.path, contents.diffusion_model, "default", manager)
    clip = None
    if contents.text_encoders:
        sources = [
            TextEncoderSource(contents.path, part.config, part.prefix) for part in contents.text_encoders
        ]
        clip_type = "flux" if isinstance(contents.diffusion_model.config, FluxConfig) else "stable_diffusion"
        clip = load_clip(sources, clip_type, tokenizer_roots, manager=manager)
    else:
        log.warning("%s holds no text encoder; load one with a CLIP loader", contents.path.name)
    vae = None
    if contents.vae is not None:
        vae = _vae(contents.path, contents.vae, manager)
    else:
        log.warning("%s holds no VAE; load one with VAELoader", contents.path.name)
    return model, clip, vae
