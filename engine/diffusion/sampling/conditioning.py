"""CONDITIONING (ComfyUI's list of [tokens, options]) -> the model inputs of batched forwards, and how
their predictions combine.

Each entry of a CONDITIONING list is one prediction. At every latent cell, the predictions of the
entries covering it are averaged, weighted by each entry's weight there (ComfyUI's calc_cond_batch):
- `area` (ConditioningSetArea*, in latent cells (h, w, y, x), or fractions tagged "percentage") runs the
  model on that crop of the latent only; without a mask its weight ramps up linearly over the first
  min(8, size // 4) cells inside each edge that is not the latent's border, so regions blend;
- `mask` (ConditioningSetMask, resized to the latent bilinearly) weights the entry by the mask times
  `mask_strength`; with `set_area_to_bounds` the model also runs on just the mask's bounding box
  (at least 8x8 cells);
- `strength` scales the weight;
- `start_percent`/`end_percent` (ConditioningSetTimestepRange) limit the entry to part of the schedule.
A cell no entry of a prompt covers gets a prediction of 0 from it, as in ComfyUI.

As in ComfyUI, each entry with an area gets a partner of the same area in the other prompt (positive
vs negative), taken from the smallest of that prompt's entries enclosing the area, so CFG compares
predictions on the same crop.

Entries whose inputs agree in shape (crop size, token width, pooled and guidance presence) are run as
one forward. Token counts that differ are made equal by repeating each entry's tokens up to their least
common multiple, as ComfyUI does, when that is at most 4x the shorter; repeating every token the same
number of times leaves attention's result unchanged. ControlNet, GLIGEN and hook conditioning are
refused rather than silently ignored.

Image inputs ride along to the model, which uses those its weights read (as ComfyUI's model_base does)
and ignores the rest: `concat_latent_image` (InpaintModelConditioning's masked image, InstructPixToPix's
control image), fitted to the latent (centre crop, bilinear) and cut to the entry's region;
`concat_mask`, or else the sampler's noise mask, at 8x the latent's size; and `reference_latents`
(ReferenceLatent) with `reference_latents_method`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from engine.diffusion.protocols import Conditioning, ModelInputs
from engine.diffusion.sampling.model_sampling import FlowModelSampling

UNSUPPORTED_KEYS = ("control", "gligen", "hooks")
LATENT_SCALE = 8
"""Pixels per latent cell each way: a concat mask is kept at pixel size."""
REFERENCE_METHODS = {
    "offset": "offset",
    "index": "index",
    "uxo/uno": "uxo",
    "uxo": "uxo",
    "index_timestep_zero": "index_timestep_zero",
}
"""FluxKontextMultiReferenceLatentMethod's choices -> how the model places reference tokens."""
MAX_TOKEN_REPEAT = 4
AREA_FEATHER = 8
"""The most cells an area's inner edge ramps over (fewer when the area is under 32 cells)."""
MIN_BOUNDS = 8
"""A mask's bounding box ("mask bounds") is at least this many cells each way."""
EMPTY_COUNT = 1e-37
"""The count every cell starts with, so a cell no entry covers divides 0 by it rather than by 0."""


def _to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """ComfyUI's repeat_to_batch_size: tile (or cut) along dim 0 to `batch`."""
    if tensor.shape[0] > batch:
        return tensor[:batch]
    if tensor.shape[0] < batch:
        repeats = math.ceil(batch / tensor.shape[0])
        return tensor.repeat(repeats, *([1] * (tensor.ndim - 1)))[:batch]
    return tensor


def fit(tensor: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """ComfyUI's common_upscale(..., "bilinear", "center"): the centred crop of the new aspect, resized."""
    old_h, old_w = tensor.shape[-2], tensor.shape[-1]
    old_aspect, aspect = old_w / old_h, width / height
    top = left = 0
    if old_aspect > aspect:
        left = round((old_w - old_w * (aspect / old_aspect)) / 2)
    elif old_aspect < aspect:
        top = round((old_h - old_h * (old_aspect / aspect)) / 2)
    cropped = tensor[..., top : old_h - top, left : old_w - left]
    return F.interpolate(cropped, size=(height, width), mode="bilinear")


@dataclass(frozen=True)
class Area:
    """A rectangle of the latent in cells, as ComfyUI's "area" stores it: (height, width, top, left)."""

    height: int
    width: int
    top: int
    left: int

    @property
    def cells(self) -> int:
        return self.height * self.width

    def inside(self, other: Area) -> bool:
        """Whether this rectangle lies within `other` (edges may touch)."""
        return (
            self.top >= other.top
            and self.left >= other.left
            and self.top + self.height <= other.top + other.height
            and self.left + self.width <= other.left + other.width
        )

    def clamped(self, height: int, width: int) -> Area:
        """The rectangle cut at the latent's bottom and right edges (ComfyUI's rule); refused when nothing
        of it is left."""
        kept = Area(
            min(height - self.top, self.height), min(width - self.left, self.width), self.top, self.left
        )
        if kept.height <= 0 or kept.width <= 0:
            raise ValueError(
                f"a conditioning area at cell ({self.top}, {self.left}) (y, x; 8 pixels a cell) lies outside "
                f"the {height}x{width}-cell latent; move it inside the image"
            )
        return kept


def _resolve_area(area: Sequence[Any], height: int, width: int) -> Area:
    """ConditioningSetArea's cells, or ConditioningSetAreaPercentage's fractions of the latent."""
    if area[0] == "percentage":
        fraction_h, fraction_w, fraction_y, fraction_x = (float(v) for v in area[1:5])
        return Area(
            max(1, round(fraction_h * height)),
            max(1, round(fraction_w * width)),
            round(fraction_y * height),
            round(fraction_x * width),
        )
    return Area(*(int(v) for v in area[:4]))


def _mask_bounds(mask: torch.Tensor) -> Area:
    """The bounding box of a resized mask's nonzero cells over its whole batch, at least 8x8 cells."""
    rows, columns = torch.nonzero(mask.abs().amax(dim=0), as_tuple=True)
    if rows.numel() == 0:
        return Area(MIN_BOUNDS, MIN_BOUNDS, 0, 0)
    top, left = int(rows.min()), int(columns.min())
    height, width = int(rows.max()) - top + 1, int(columns.max()) - left + 1
    return Area(max(MIN_BOUNDS, height), max(MIN_BOUNDS, width), top, left)


def _edge_ramp(length: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """Per-cell factors along one side of an area: t-th cell from a ramped edge times (t + 1) / n."""
    factors = torch.ones(length, dtype=torch.float64)
    count = min(AREA_FEATHER, length // 4)
    ramp = torch.arange(1, count + 1, dtype=torch.float64) * (1.0 / count) if count else factors[:0]
    if ramp_start:
        factors[:count] *= ramp
    if ramp_end:
        factors[length - count :] *= ramp.flip(0)
    return factors


@dataclass(frozen=True, eq=False)
class CondEntry:
    """One conditioning entry, already batched to the latent's batch and on the model's device."""

    inputs: ModelInputs
    slot: int
    """0 for the positive prompt's predictions, 1 for the negative's."""
    region: Area
    """The crop of the latent the model runs on: `area` cut to the latent, or the whole latent."""
    sigma_start: float | None = None
    sigma_end: float | None = None
    area: Area | None = None
    """The rectangle as the graph set it (compared when pairing areas between prompts)."""
    weight: torch.Tensor | None = None
    """The entry's weight over its region, broadcastable to [B, C, h, w]; None means 1 everywhere."""

    def active_at(self, sigma: float) -> bool:
        if self.sigma_start is not None and sigma > self.sigma_start:
            return False
        return self.sigma_end is None or sigma >= self.sigma_end

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        r = self.region
        return x[..., r.top : r.top + r.height, r.left : r.left + r.width]

    def batchable_with(self, other: CondEntry) -> bool:
        if (self.region.height, self.region.width) != (other.region.height, other.region.width):
            return False
        a, b = self.inputs, other.inputs
        ta, tb = a.context.shape, b.context.shape
        if ta[0] != tb[0] or ta[2] != tb[2]:
            return False
        if ta[1] != tb[1] and math.lcm(ta[1], tb[1]) // min(ta[1], tb[1]) > MAX_TOKEN_REPEAT:
            return False
        pairs = [(a.pooled, b.pooled), (a.guidance, b.guidance), (a.concat_image, b.concat_image)]
        pairs.append((a.concat_mask, b.concat_mask))
        if len(a.reference_latents) != len(b.reference_latents) or a.reference_method != b.reference_method:
            return False
        pairs += zip(a.reference_latents, b.reference_latents, strict=True)
        for x, y in pairs:
            if (x is None) != (y is None) or (x is not None and y is not None and x.shape != y.shape):
                return False
        return True


def _weight(
    options: Mapping[str, Any],
    mask: torch.Tensor | None,
    area: Area | None,
    region: Area,
    shape: Sequence[int],
) -> torch.Tensor | None:
    """ComfyUI's `mult` of an entry over its region: mask x mask_strength, or an area's edge ramps, times
    strength."""
    strength = float(options.get("strength", 1.0))
    if mask is not None:
        mask = mask[:, region.top : region.top + region.height, region.left : region.left + region.width]
        weight = _to_batch(mask, shape[0])[:, None] * float(options.get("mask_strength", 1.0))
        return weight * strength
    if area is None:
        return None if strength == 1.0 else torch.full((1, 1, 1, 1), strength)
    rows = _edge_ramp(region.height, region.top != 0, region.top + region.height < shape[-2])
    columns = _edge_ramp(region.width, region.left != 0, region.left + region.width < shape[-1])
    return ((rows[:, None] * columns[None, :]).float() * strength)[None, None]


def cond_entries(
    conditioning: Conditioning,
    slot: int,
    shape: Sequence[int],
    device: torch.device,
    model_sampling: FlowModelSampling,
    denoise_mask: torch.Tensor | None = None,
) -> list[CondEntry]:
    """The entries of one prompt for a latent of `shape` [B, C, h, w] (`denoise_mask`: the sampler's noise
    mask at the latent's shape, the concat mask of entries that carry none)."""
    batch, height, width = shape[0], shape[-2], shape[-1]
    entries = []
    for tokens, options in conditioning:
        refused = [key for key in UNSUPPORTED_KEYS if options.get(key) is not None]
        if refused:
            raise ValueError(f"conditioning with {', '.join(refused)} is not supported by this engine")
        pooled = options.get("pooled_output")
        guidance = options.get("guidance")
        inputs = ModelInputs(
            context=_to_batch(tokens.to(device=device, dtype=torch.float32), batch),
            pooled=None
            if pooled is None
            else _to_batch(pooled.to(device=device, dtype=torch.float32), batch),
            guidance=None if guidance is None else torch.full((batch,), float(guidance), device=device),
        )
        area = None if options.get("area") is None else _resolve_area(options["area"], height, width)
        mask = options.get("mask")
        if mask is not None:
            mask = mask.to(device=device, dtype=torch.float32)
            mask = mask.reshape(-1, mask.shape[-2], mask.shape[-1])
            if tuple(mask.shape[1:]) != (height, width):
                mask = F.interpolate(mask[:, None], size=(height, width), mode="bilinear")[:, 0]
            if options.get("set_area_to_bounds"):
                area = _mask_bounds(mask)
        region = Area(height, width, 0, 0) if area is None else area.clamped(height, width)
        inputs = _with_images(inputs, options, shape, region, device, denoise_mask)
        weight = _weight(options, mask, area, region, shape)
        start, end = options.get("start_percent"), options.get("end_percent")
        entries.append(
            CondEntry(
                inputs,
                slot,
                region,
                sigma_start=None if start is None else model_sampling.percent_to_sigma(start),
                sigma_end=None if end is None else model_sampling.percent_to_sigma(end),
                area=area,
                weight=None if weight is None else weight.to(device),
            )
        )
    return entries


def _with_images(
    inputs: ModelInputs,
    options: Mapping[str, Any],
    shape: Sequence[int],
    region: Area,
    device: torch.device,
    denoise_mask: torch.Tensor | None,
) -> ModelInputs:
    """`inputs` with the entry's image inputs, batched to the latent and cut to `region`."""
    batch, height, width = shape[0], shape[-2], shape[-1]
    top, left, bottom, right = region.top, region.left, region.top + region.height, region.left + region.width
    image = options.get("concat_latent_image")
    if image is not None:
        image = fit(image.to(device=device, dtype=torch.float32), height, width)
        image = _to_batch(image, batch)[..., top:bottom, left:right]
    mask = options.get("concat_mask")
    if mask is None and denoise_mask is not None:
        mask = denoise_mask.mean(dim=1, keepdim=True)
    if mask is not None:
        mask = mask.to(device=device, dtype=torch.float32)
        mask = mask.reshape(-1, 1, mask.shape[-2], mask.shape[-1]).mean(dim=1, keepdim=True)
        mask = _to_batch(fit(mask, height * LATENT_SCALE, width * LATENT_SCALE), batch)
        mask = mask[
            ..., top * LATENT_SCALE : bottom * LATENT_SCALE, left * LATENT_SCALE : right * LATENT_SCALE
        ]
    method = str(options.get("reference_latents_method", "offset"))
    if method not in REFERENCE_METHODS:
        raise ValueError(
            f"reference_latents_method '{method}' is not supported by this engine; "
            f"expected one of {', '.join(REFERENCE_METHODS)}"
        )
    references = tuple(
        _to_batch(r.to(device=device, dtype=torch.float32), batch)
        for r in options.get("reference_latents") or ()
    )
    return replace(
        inputs,
        concat_image=image,
        concat_mask=mask,
        reference_latents=references,
        reference_method=REFERENCE_METHODS[method],
    )


def pair_areas(positive: list[CondEntry], negative: list[CondEntry]) -> None:
    """Give each entry with an area a partner of the same area in the other prompt, unless one exists
    (ComfyUI's create_cond_with_same_area_if_none, positive's entries first; the lists grow in place).

    The partner is the entry itself (its area, mask, strength and range) with the inputs of the other
    prompt's smallest entry enclosing the area (an entry without area encloses every area but loses to
    any with one).
    """
    for entries, others in ((positive, negative), (negative, positive)):
        for entry in list(entries):
            if entry.area is None:
                continue
            enclosing: CondEntry | None = None
            for other in others:
                if other.area is None:
                    enclosing = enclosing or other
                elif entry.area.inside(other.area) and (
                    enclosing is None or enclosing.area is None or other.area.cells < enclosing.area.cells
                ):
                    enclosing = other
            if enclosing is None or enclosing.area == entry.area:
                continue
            others.append(replace(entry, inputs=enclosing.inputs, slot=enclosing.slot))


@dataclass(frozen=True)
class Forward:
    """One model evaluation: the entries run together and their concatenated inputs."""

    entries: tuple[CondEntry, ...]
    inputs: ModelInputs


def plan_forwards(entries: Sequence[CondEntry], batch_prompts: bool = True) -> list[Forward]:
    """Group entries into forwards as ComfyUI does: the first remaining entry and all batchable with it
    (with `batch_prompts` off, only those of the same prompt: the positive and negative run apart)."""
    remaining = list(entries)
    forwards = []
    while remaining:
        first = remaining[0]
        group = [
            entry
            for entry in remaining
            if entry is first
            or (first.batchable_with(entry) and (batch_prompts or entry.slot == first.slot))
        ]
        remaining = [entry for entry in remaining if all(entry is not member for member in group)]
        forwards.append(Forward(tuple(group), _concat_inputs(group)))
    return forwards


def _concat_inputs(group: Sequence[CondEntry]) -> ModelInputs:
    """One ModelInputs for a group's forward, tokens repeated to the group's least common multiple."""
    if len(group) == 1:
        return group[0].inputs
    tokens = math.lcm(*(entry.inputs.context.shape[1] for entry in group))
    return ModelInputs(
        context=torch.cat(
            [e.inputs.context.repeat(1, tokens // e.inputs.context.shape[1], 1) for e in group]
        ),
        pooled=_concat_optional([e.inputs.pooled for e in group]),
        guidance=_concat_optional([e.inputs.guidance for e in group]),
        concat_image=_concat_optional([e.inputs.concat_image for e in group]),
        concat_mask=_concat_optional([e.inputs.concat_mask for e in group]),
        reference_latents=tuple(
            torch.cat(parts) for parts in zip(*(e.inputs.reference_latents for e in group), strict=True)
        ),
        reference_method=group[0].inputs.reference_method,
    )


def _concat_optional(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    """`batchable_with` puts only entries that all carry an input, or all lack it, in one group."""
    present = [part for part in parts if part is not None]
    return torch.cat(present) if present else None


class WeightedSum:
    """One prompt's predictions accumulated cell by cell: sum of prediction x weight, and of weights."""

    def __init__(self, like: torch.Tensor) -> None:
        self.total = torch.zeros_like(like)
        self.count = torch.full_like(like, EMPTY_COUNT)

    def add(self, entry: CondEntry, prediction: torch.Tensor) -> None:
        total, count = entry.crop(self.total), entry.crop(self.count)
        if entry.weight is None:
            total += prediction
            count += 1.0
        else:
            total += prediction * entry.weight
            count += entry.weight

    def mean(self) -> torch.Tensor:
        return self.total / self.count
