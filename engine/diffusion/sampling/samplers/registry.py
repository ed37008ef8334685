"""Sampler functions by name, with what the code around a sampler must know about each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from engine.diffusion.sampling.samplers.common import SamplerFunction

Sampler = TypeVar("Sampler", bound=SamplerFunction)
"""Bound to the shared signature so `register` checks it, while the function keeps its own options."""


@dataclass(frozen=True)
class SamplerSpec:
    function: Callable[..., torch.Tensor]
    """A `SamplerFunction` plus its own keyword options, which the caller passes through by name."""
    needs_uncond: bool = False
    """A cfg++ sampler: the guider must evaluate the negative prompt even at cfg 1 and expose it."""
    fresh_inpaint_noise: bool = False
    """ddim: the inpainted (masked-out) region is re-noised from a second seed, not the initial noise."""
    final_sigma: float | None = None
    """Where the solver stops when sigmas end in 0 (uni_pc: 0.001); the final un-scaling uses it."""


SAMPLERS: dict[str, SamplerSpec] = {}


def register(
    name: str,
    *,
    needs_uncond: bool = False,
    fresh_inpaint_noise: bool = False,
    final_sigma: float | None = None,
) -> Callable[[Sampler], Sampler]:
    def add(function: Sampler) -> Sampler:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} registered twice")
        SAMPLERS[name] = SamplerSpec(function, needs_uncond, fresh_inpaint_noise, final_sigma)
        return function

    return add
