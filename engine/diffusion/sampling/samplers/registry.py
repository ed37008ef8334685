"""Sampler functions by name, with what the code around a sampler must know about each."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.diffusion.sampling.samplers.common import SamplerFunction


@dataclass(frozen=True)
class SamplerSpec:
    function: SamplerFunction
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
) -> Callable[[SamplerFunction], SamplerFunction]:
    def add(function: SamplerFunction) -> SamplerFunction:
        if name in SAMPLERS:
            raise ValueError(f"sampler {name!r} registered twice")
        SAMPLERS[name] = SamplerSpec(function, needs_uncond, fresh_inpaint_noise, final_sigma)
        return function

    return add
