"""CONDITIONING (ComfyUI's list of [tokens, options]) -> the model inputs of batched forwards.

Each entry of a CONDITIONING list is one prediction; the predictions of a list are averaged with
equal weights (the whole-image case of ComfyUI's area-weighted average). Area and mask conditioning
are not supported and are refused rather than silently ignored. `start_percent`/`end_percent`
(ConditioningSetTimestepRange) limit an entry to part of the schedule, as in ComfyUI.

Entries whose inputs agree in shape are run as one forward (cond and uncond together, the main
speed-up of CFG). Token counts that differ are made equal by repeating each entry's tokens up to
their least common multiple, as ComfyUI does, when that is at most 4x the shorter; repeating
every token the same number of times leaves attention's result unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.diffusion.protocols import Conditioning, ModelInputs
from engine.diffusion.sampling.model_sampling import FlowModelSampling

"""ComfyUI's CONDITIONING: [[tokens [b, T, D], {"pooled_output": [b, P], "guidance": float, ...}], ...]."""

UNSUPPORTED_KEYS = ("area", "mask", "control", "gligen", "hooks")
MAX_TOKEN_REPEAT = 4


def _to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """ComfyUI's repeat_to_batch_size: tile (or cut) along dim 0 to `batch`."""
    if tensor.shape[0] > batch:
        return tensor[:batch]
    if tensor.shape[0] < batch:
        repeats = math.ceil(batch / tensor.shape[0])
        return tensor.repeat(repeats, *([1] * (tensor.ndim - 1)))[:batch]
    return tensor


@dataclass(frozen=True)
class CondEntry:
    """One conditioning entry, already batched to the latent's batch and on the model's device."""

    inputs: ModelInputs
    slot: int
    """0 for the positive prompt's predictions, 1 for the negative's."""
    sigma_start: float | None = None
    sigma_end: float | None = None

    def active_at(self, sigma: float) -> bool:
        if self.sigma_start is not None and sigma > self.sigma_start:
            return False
        return self.sigma_end is None or sigma >= self.sigma_end

    def batchable_with(self, other: CondEntry) -> bool:
        a, b = self.inputs, other.inputs
        ta, tb = a.context.shape, b.context.shape
        if ta[0] != tb[0] or ta[2] != tb[2]:
            return False
        if ta[1] != tb[1] and math.lcm(ta[1], tb[1]) // min(ta[1], tb[1]) > MAX_TOKEN_REPEAT:
            return False
        for x, y in ((a.pooled, b.pooled), (a.guidance, b.guidance)):
            if (x is None) != (y is None) or (x is not None and y is not None and x.shape != y.shape):
                return False
        return True


def cond_entries(
    conditioning: Conditioning,
    slot: int,
    batch: int,
    device: torch.device,
    model_sampling: FlowModelSampling,
) -> list[CondEntry]:
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
        start, end = options.get("start_percent"), options.get("end_percent")
        entries.append(
            CondEntry(
                inputs,
                slot,
                None if start is None else model_sampling.percent_to_sigma(start),
                None if end is None else model_sampling.percent_to_sigma(end),
            )
        )
    return entries


@dataclass(frozen=True)
class Forward:
    """One model evaluation: the inputs of a group of entries, and which prediction (slot) each chunk is."""

    slots: tuple[int, ...]
    inputs: ModelInputs


def plan_forwards(entries: Sequence[CondEntry]) -> list[Forward]:
    """Group entries into forwards as ComfyUI does: the first remaining entry and all batchable with it."""
    remaining = list(entries)
    forwards = []
    while remaining:
        first = remaining[0]
        group = [entry for entry in remaining if entry is first or first.batchable_with(entry)]
        remaining = [entry for entry in remaining if all(entry is not member for member in group)]
        forwards.append(Forward(tuple(entry.slot for entry in group), _concat_inputs(group)))
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
    )


def _concat_optional(parts: list[torch.Tensor | None]) -> torch.Tensor | None:
    """`batchable_with` puts only entries that all carry an input, or all lack it, in one group."""
    present = [part for part in parts if part is not None]
    return torch.cat(present) if present else None
