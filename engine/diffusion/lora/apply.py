"""Reading a LoRA file and applying it to a MODEL and a CLIP, as ComfyUI's `load_lora_for_models` does.

Every layer of the file is looked up under the names the model and each of the CLIP's text encoders
accept (lora.targets); what fits becomes weight patches on new views of them, the inputs stay as they
were. What fits nothing is left out and reported (ComfyUI logs "lora key not loaded" for each key): a
LoRA made for another model, or the text-encoder half of a file given to LoraLoaderModelOnly.

XLabs' Flux LoRAs (`double_blocks.0.processor.qkv_lora1.down.weight`) are first renamed to diffusers'
names by diffusers' own converter, which cuts their fused qkv changes into q, k and v.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.loaders.lora_conversion_utils import _convert_xlabs_flux_lora_to_diffusers

from engine.diffusion.diffusion_model import LoadedDiffusionModel
from engine.diffusion.lora.adapters import Adapter, Layers, read_layers
from engine.diffusion.lora.patches import WeightPatch
from engine.diffusion.lora.targets import Targets, diffusion_model_targets, text_encoder_targets
from engine.diffusion.safetensors_file import load_tensors
from engine.diffusion.text_encoders import CLIP

log = logging.getLogger(__name__)

XLABS_KEY = re.compile(r"(^|\.)(double|single)_blocks\.\d+\.processor\.")

REPORTED_REASONS = 5
REPORTED_KEYS = 3
"""The warning names this many reasons and keys for each (every key is logged at debug level)."""


@dataclass(frozen=True)
class LoraFile:
    name: str
    layers: Layers
    keys: int
    """How many keys the file holds (after XLabs renaming)."""


def from_xlabs(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The file's tensors with XLabs-named ones renamed by diffusers' converter (others as they are)."""
    xlabs = {key: tensor for key, tensor in tensors.items() if XLABS_KEY.search(key)}
    rest = {key: tensor for key, tensor in tensors.items() if key not in xlabs}
    if not xlabs:
        return rest
    return {**rest, **_convert_xlabs_flux_lora_to_diffusers(xlabs)}


def read_lora(path: str | Path) -> LoraFile:
    """A LoRA file's changes, read onto the CPU as stored (a pickle file is refused, saying why)."""
    tensors = from_xlabs(load_tensors(path))
    return LoraFile(Path(path).name, read_layers(tensors), len(tensors))


@dataclass
class LoraReport:
    """What of a LoRA file was applied where, and why the rest was not."""

    lora: str
    keys: int
    layers: dict[str, int] = field(default_factory=dict)
    """Model name -> how many of its layers the LoRA changes."""
    not_loaded: dict[str, str] = field(default_factory=dict)
    """File key -> why it was not loaded."""

    def log(self) -> None:
        applied = ", ".join(f"{count} layers of {model}" for model, count in self.layers.items() if count)
        log.info("LoRA %s: %s", self.lora, applied or "nothing applied")
        if not self.not_loaded:
            return
        by_reason: dict[str, list[str]] = {}
        for key, why in self.not_loaded.items():
            log.debug("lora key not loaded: %s (%s)", key, why)
            by_reason.setdefault(why, []).append(key)
        reasons = [
            f"{why}: {', '.join(keys[:REPORTED_KEYS])}"
            + (f" and {len(keys) - REPORTED_KEYS} more" if len(keys) > REPORTED_KEYS else "")
            for why, keys in list(by_reason.items())[:REPORTED_REASONS]
        ]
        if len(by_reason) > REPORTED_REASONS:
            reasons.append(f"and {len(by_reason) - REPORTED_REASONS} more reasons")
        log.warning(
            "LoRA %s: %d of its %d keys not loaded into %s; %s",
            self.lora,
            len(self.not_loaded),
            self.keys,
            " + ".join(self.layers),
            "; ".join(reasons),
        )


@dataclass
class _Destination:
    """One module a LoRA may change: the names of its layers, the strength, the patches made for it."""

    targets: Targets
    strength: float
    patches: list[WeightPatch] = field(default_factory=list)
    layers: int = 0


def _place(base: str, adapter: Adapter, kind: str, destinations: list[_Destination]) -> str | None:
    """Patch the layer `base` (its weight or its bias) in the first module that has it; why not, if not."""
    for destination in destinations:
        names = destination.targets.weights if kind == "weight" else destination.targets.biases
        target = names.get(base)
        if target is None:
            continue
        if adapter.shape != target.shape:
            return (
                f"its change is {tuple(adapter.shape)} but that {kind} of {destination.targets.model} is "
                f"{tuple(target.shape)}"
            )
        destination.layers += 1
        if destination.strength != 0:
            destination.patches += [
                WeightPatch(placement.param, adapter, placement.rows, destination.strength)
                for placement in target.placements
            ]
        return None
    models = " or ".join(destination.targets.model for destination in destinations)
    return f"no {kind} of {models} has this name"


def apply_lora(
    lora: LoraFile,
    model: LoadedDiffusionModel,
    clip: CLIP | None,
    strength_model: float,
    strength_clip: float,
) -> tuple[LoadedDiffusionModel, CLIP | None, LoraReport]:
    """New views of `model` and `clip` with the LoRA's changes (the given ones are left unchanged).

    Without a CLIP (LoraLoaderModelOnly) text-encoder layers count as not loaded, as in ComfyUI.
    A strength of 0 adds no patch: the view computes exactly what its source computes.
    """
    destinations = [_Destination(diffusion_model_targets(model.architecture), strength_model)]
    encoders = dict(clip.encoders) if clip is not None else {}
    destinations += [
        _Destination(text_encoder_targets(encoder.spec), strength_clip) for encoder in encoders.values()
    ]
    report = LoraReport(lora.name, lora.keys)
    report.not_loaded.update(lora.layers.unusable)
    for kind, changes in (("weight", lora.layers.weights), ("bias", lora.layers.biases)):
        for base, adapter in changes.items():
            why = _place(base, adapter, kind, destinations)
            if why is not None:
                keys = lora.layers.keys[base]
                mine = [key for key in keys if key.endswith(".diff_b") == (kind == "bias")]
                report.not_loaded.update(dict.fromkeys(mine, why))
    report.layers = {destination.targets.model: destination.layers for destination in destinations}
    patched_model = model.with_patches(destinations[0].patches)
    patched_clip = None
    if clip is not None:
        by_encoder = {key: d.patches for key, d in zip(encoders, destinations[1:], strict=True)}
        patched_clip = clip.with_patches(by_encoder)
    return patched_model, patched_clip, report
