"""What a weights file holds, from tensor names and shapes alone (no tensor is read).

A file may hold one model (a Flux diffusion model, a VAE, a text encoder) or several under ComfyUI's
prefixes (an all-in-one checkpoint: `model.` or `model.diffusion_model.`, `text_encoders.<name>.transformer.`,
`vae.` or `first_stage_model.`). Each is recognised by a key only its family has and configured from
shapes, so a full-size file and a tiny test file of the same family are read alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Generic, TypeVar

from engine.diffusion import auraflow, autoencoder, flux
from engine.diffusion.autoencoder import AutoencoderConfig
from engine.diffusion.diffusion_model import Architecture
from engine.diffusion.safetensors_file import TensorInfo, WeightsFileError, read_header
from engine.diffusion.text_encoders import CHECKPOINT_PREFIXES, TextEncoderSpec, detect_text_encoder

ConfigT = TypeVar("ConfigT", Architecture, AutoencoderConfig, TextEncoderSpec)


class UnrecognizedModelError(WeightsFileError):
    """A weights file in which no model this engine runs was found."""


@dataclass(frozen=True)
class Part(Generic[ConfigT]):
    """One model inside a file: where its tensor names start, and its config."""

    prefix: str
    config: ConfigT


@dataclass(frozen=True)
class FileContents:
    path: Path
    diffusion_model: Part[Architecture] | None = None
    text_encoders: tuple[Part[TextEncoderSpec], ...] = ()
    vae: Part[AutoencoderConfig] | None = None

    def describe(self) -> str:
        parts = [self.diffusion_model, *self.text_encoders, self.vae]
        return ", ".join(part.config.name for part in parts if part is not None)


_DIFFUSION_FAMILIES = (("Flux", flux.find), ("AuraFlow", auraflow.find))

FindResult = TypeVar("FindResult")


def _find(path: Path, family: str, find: Callable[[], FindResult]) -> FindResult:
    """One family's finder, reading shapes from a header: a file with a family's marker tensor but not
    the rest of its layout (damaged, or a variant) is refused by name instead of with a bare KeyError."""
    try:
        return find()
    except WeightsFileError as exc:
        raise WeightsFileError(f"{path.name}: {exc}") from exc
    except (KeyError, IndexError, ValueError, ZeroDivisionError) as exc:
        raise WeightsFileError(
            f"{path.name}: holds part of a {family} model but not its whole layout "
            f"({type(exc).__name__}: {exc}); the file may be damaged or of a variant this engine does not run"
        ) from exc


def identify_tensors(path: Path, tensors: Mapping[str, TensorInfo]) -> FileContents:
    """The models among `tensors` (a file's names, dtypes and shapes); an error naming the file if none."""
    diffusion_model = None
    for family, find in _DIFFUSION_FAMILIES:
        if (found := _find(path, family, partial(find, tensors))) is not None:
            diffusion_model = Part(*found)
            break
    text_encoders = []
    for prefix in (*CHECKPOINT_PREFIXES.values(), ""):
        part_tensors = {
            name[len(prefix) :]: info for name, info in tensors.items() if name.startswith(prefix)
        }
        if not part_tensors:
            continue
        spec = _find(path, "text encoder", partial(detect_text_encoder, part_tensors))
        if spec is not None:
            text_encoders.append(Part(prefix, spec))
    found_vae = _find(path, "VAE", partial(autoencoder.find, tensors))
    contents = FileContents(
        path, diffusion_model, tuple(text_encoders), Part(*found_vae) if found_vae is not None else None
    )
    if not contents.describe():
        sample = ", ".join(sorted(tensors)[:3]) or "no tensors at all"
        raise UnrecognizedModelError(
            f"{path.name}: not a model this engine runs (it knows Flux and AuraFlow diffusion models, "
            f"CLIP-L, T5-XXL and Pile-T5-XL text encoders and KL VAEs, in ComfyUI's layouts); "
            f"its tensors start with {sample}"
        )
    return contents


def identify(path: str | Path) -> FileContents:
    """What the safetensors file at `path` holds (pickle formats are refused, saying why)."""
    header = read_header(path)
    return identify_tensors(header.path, header.tensors)
