"""Where the layers a LoRA file names live in the engine's modules, under every name ComfyUI accepts.

The engine runs diffusers' transformers and transformers' text encoders, whose parameter names differ
from those LoRA files use: kohya names Flux's layers after BFL's file layout (`lora_unet_double_blocks_0_
img_attn_qkv`), ComfyUI's own files use the same layout dotted (`diffusion_model.double_blocks.0...`),
PEFT/diffusers files use diffusers' names (`transformer.transformer_blocks.0.attn.to_q`). ComfyUI's
names for each model are all registered here (its `model_lora_keys_unet` / `model_lora_keys_clip`).

The original layouts do not map one to one onto diffusers' parameters: Flux's fused qkv projection is
three of them (a single block's linear1 four), and the final modulation's halves are swapped. Rather
than describe that again for LoRAs, the mapping is traced through the very conversion the model is
loaded with: each original tensor is given its row numbers as values, converted, and each converted
parameter then shows which rows of which original tensor it is made of. A LoRA on an original layer
is so placed exactly where that layer's weights went, for any model size.

diffusers' own LoRA converters (`_convert_kohya_flux_lora_to_diffusers`) do not serve for kohya's names:
they hard-code the full-size model (19 and 38 blocks; 3072 and 12288 rows where they split), so any
other size fails an assertion, they raise on any key they do not know where ComfyUI loads what fits,
and they drop T5 and bias changes. They are the reference the mapping is checked against.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from engine.diffusion import auraflow, flux
from engine.diffusion.auraflow import AuraFlowConfig
from engine.diffusion.diffusion_model import Architecture
from engine.diffusion.flux import FluxConfig
from engine.diffusion.lora.adapters import Rows
from engine.diffusion.text_encoders import TextEncoderSpec, text_encoder_layout
from engine.diffusion.text_encoders.detect import architecture as text_encoder_architecture

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Placement:
    """A module parameter made of (some of) a layer's rows."""

    param: str
    rows: Rows | None
    """Which rows of the layer's change make the parameter's, in order; None: all of them."""


@dataclass(frozen=True)
class Target:
    """A layer as a LoRA names it: the shape its change must have, and where the change goes."""

    shape: Shape
    placements: tuple[Placement, ...]


@dataclass(frozen=True)
class Targets:
    """The layers of one module under every name a LoRA file may give them."""

    model: str
    """What the module is, for messages ("Flux dev", "CLIP-L")."""
    weights: Mapping[str, Target]
    """Base name -> the layer's weight (or, for a name ending in a non-weight parameter, that one)."""
    biases: Mapping[str, Target]
    """Base name -> the bias of the layer (where `.diff_b` changes go)."""


def _runs(rows: torch.Tensor) -> Rows:
    """[3, 4, 5, 0, 1] -> ((3, 6), (0, 2))."""
    breaks = (torch.nonzero(rows[1:] - rows[:-1] != 1).flatten() + 1).tolist()
    bounds = [0, *breaks, len(rows)]
    return tuple((int(rows[a]), int(rows[b - 1]) + 1) for a, b in itertools.pairwise(bounds))


def traced_placements(
    layout: Mapping[str, Shape], convert: Callable[[dict[str, torch.Tensor]], Mapping[str, torch.Tensor]]
) -> tuple[dict[str, list[Placement]], dict[str, Shape]]:
    """For each tensor of an original layout, the converted parameters made of its rows; and the
    converted parameters' shapes. `convert` is the model's own conversion to its module's names."""
    names, starts, tagged = [], [], {}
    start = 0
    for name, shape in layout.items():
        names.append(name)
        starts.append(start)
        tagged[name] = torch.arange(start, start + shape[0]).reshape(shape[0], *([1] * (len(shape) - 1)))
        start += shape[0]
    placements: dict[str, list[Placement]] = {name: [] for name in layout}
    shapes: dict[str, Shape] = {}
    for param, values in convert(tagged).items():
        rows = values.reshape(values.shape[0], -1)[:, 0]
        index = bisect.bisect_right(starts, int(rows[0])) - 1
        source = names[index]
        local = rows - starts[index]
        if local.min() < 0 or local.max() >= layout[source][0]:
            raise ValueError(f"{param} is made of rows of more than one original tensor")
        runs = _runs(local)
        whole = runs == ((0, layout[source][0]),)
        placements[source].append(Placement(param, None if whole else runs))
        shapes[param] = (len(local), *layout[source][1:])
    return placements, shapes


class _Names:
    """Collects the names a LoRA may give each parameter; the first name registered wins."""

    def __init__(self) -> None:
        self.weights: dict[str, Target] = {}
        self.biases: dict[str, Target] = {}

    def add(
        self,
        targets: Mapping[str, Target],
        dotted: Iterable[str] = (),
        underscored: Iterable[str] = (),
    ) -> None:
        """Each parameter under `prefix + name` for the dotted prefixes and `prefix + name_with_underscores`
        for the underscored ones (a weight's name without `.weight`; other parameters, such as norm
        scales, only dotted and whole, as ComfyUI names them for `.diff` changes)."""
        dotted, underscored = tuple(dotted), tuple(underscored)
        for param, target in targets.items():
            if not param.endswith(".weight"):
                for prefix in dotted:
                    self.weights.setdefault(prefix + param, target)
                continue
            layer = param.removesuffix(".weight")
            names = [prefix + layer for prefix in dotted]
            names += [prefix + layer.replace(".", "_") for prefix in underscored]
            bias = targets.get(layer + ".bias")
            for name in names:
                self.weights.setdefault(name, target)
                if bias is not None:
                    self.biases.setdefault(name, bias)

    def build(self, model: str) -> Targets:
        return Targets(model, self.weights, self.biases)


def _leading_rows(target: Target, count: int) -> Target:
    """The first `count` rows of a layer, as a layer of its own (the parameters lying wholly in them)."""
    inside = []
    for placement in target.placements:
        runs = placement.rows or ((0, target.shape[0]),)
        if all(stop <= count for _, stop in runs):
            inside.append(placement)
        elif any(start < count for start, _ in runs):
            raise ValueError(f"{placement.param} straddles row {count} of its layer")
    return Target((count, *target.shape[1:]), tuple(inside))


def _original_and_module_targets(
    layout: Mapping[str, Shape], convert: Callable[[dict[str, torch.Tensor]], Mapping[str, torch.Tensor]]
) -> tuple[dict[str, Target], dict[str, Target]]:
    placements, shapes = traced_placements(layout, convert)
    original = {name: Target(shape, tuple(placements[name])) for name, shape in layout.items()}
    module = {param: Target(shape, (Placement(param, None),)) for param, shape in shapes.items()}
    return original, module


@functools.cache
def _flux_targets(config: FluxConfig) -> Targets:
    original, module = _original_and_module_targets(flux.layout(config), config.to_diffusers)
    names = _Names()
    names.add(original, dotted=["diffusion_model."], underscored=["lora_unet_"])
    names.add(module, dotted=["transformer.", ""], underscored=["lycoris_", "lora_transformer_"])
    for i in range(config.depth_single_blocks):
        linear1 = original[f"single_blocks.{i}.linear1.weight"]
        names.weights[f"diffusion_model.single_blocks.{i}.linear1_qkv"] = _leading_rows(
            linear1, 3 * config.hidden_size
        )
    return names.build(config.name)


@functools.cache
def _auraflow_targets(config: AuraFlowConfig) -> Targets:
    original, module = _original_and_module_targets(auraflow.layout(config), config.to_diffusers)
    names = _Names()
    names.add(original, dotted=["diffusion_model."], underscored=["lora_unet_"])
    names.add(module, dotted=["transformer."])
    return names.build(config.name)


def diffusion_model_targets(architecture: Architecture) -> Targets:
    """The layers of a diffusion model of this architecture (config), under ComfyUI's LoRA names:

    Flux: kohya `lora_unet_{BFL name}`, ComfyUI's `diffusion_model.{BFL name}` (and `.linear1_qkv`, the
    attention rows of a single block's linear1), diffusers' `transformer.{name}` and bare `{name}`
    (DiffSynth), SimpleTuner's `lycoris_{name}`, OneTrainer's `lora_transformer_{name}`.
    AuraFlow: `lora_unet_{original}`, `diffusion_model.{original}` and `transformer.{diffusers name}`.
    """
    if isinstance(architecture, FluxConfig):
        # The module's names are diffusers' whatever the file's layout; the original names are BFL's.
        return _flux_targets(dataclasses.replace(architecture, file_layout="bfl"))
    if isinstance(architecture, AuraFlowConfig):
        return _auraflow_targets(architecture)
    raise TypeError(f"no LoRA names are known for {architecture.name} models")


TEXT_ENCODER_PREFIXES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "clip_l": (("text_encoders.clip_l.transformer.", "text_encoder."), ("lora_te_", "lora_te1_")),
    "t5xxl": (("text_encoders.t5xxl.transformer.",), ("lora_te2_", "lora_te3_")),
    "pile_t5xl": (("text_encoders.pile_t5xl.transformer.",), ()),
}
"""Family -> (dotted, underscored) prefixes of its layers' names in LoRA files. CLIP-L: kohya's lora_te_/
lora_te1_, diffusers' text_encoder., ComfyUI's own; T5-XXL beside CLIP-L (Flux): OneTrainer's lora_te2_
(ComfyUI also accepts lora_te3_); Pile-T5-XL: only ComfyUI's own names."""


@functools.cache
def text_encoder_targets(spec: TextEncoderSpec) -> Targets:
    """The layers of a text encoder under ComfyUI's LoRA names, which follow the encoder's file layout
    (`text_model.encoder.layers.0.self_attn.q_proj`), placed on the transformers module's parameters."""
    layout = text_encoder_layout(spec)
    file_names = text_encoder_architecture(spec).module_state_dict({name: name for name in layout})
    targets = {file: Target(layout[file], (Placement(param, None),)) for param, file in file_names.items()}
    dotted, underscored = TEXT_ENCODER_PREFIXES[spec.family]
    names = _Names()
    names.add(targets, dotted, underscored)
    return names.build(spec.name)
