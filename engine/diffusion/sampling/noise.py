"""Where every random number of a sampling run comes from, following ComfyUI's rules (COMFY.md §7).

- Initial noise: one CPU generator seeded with the seed draws the whole batch in one call, so a seed
  gives the same image on any hardware. With a latent `batch_index`, noise is drawn one sample at a
  time up to the highest index and the listed ones kept, so sample k of a batch matches sample k
  generated alone.
- Per-step noise of ancestral and SDE samplers: a generator on x's device seeded with the seed, plus
  one when x is on the CPU (so, as in ComfyUI, CPU and CUDA runs of those samplers differ).
- Brownian-tree samplers: torchsde's BrownianTree with the seed as its entropy, on the CPU or (the
  `_gpu` samplers) on x's device.

Generators are private objects, never the global torch RNG: concurrent runs cannot disturb each other.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchsde

warnings.filterwarnings("ignore", message=r"Should have t[ab][<>]=t[01]", module="torchsde")
"""The tree keeps its ends as Python floats and is queried with float32 sigmas, which round past an end by
one ulp; torchsde warns about it on every step (in ComfyUI too) and the query is answered all the same."""

NoiseSampler = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(sigma, sigma_next) -> unit-variance noise shaped like x, for the step between the two sigmas."""


def prepare_noise(latent: torch.Tensor, seed: int, batch_index: Sequence[int] | None = None) -> torch.Tensor:
    """The initial noise for a latent batch: `torch.randn(shape, generator=torch.manual_seed(seed))`."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    if batch_index is None:
        return torch.randn(latent.shape, dtype=latent.dtype, generator=generator, device="cpu")
    wanted = set(batch_index)
    drawn: dict[int, torch.Tensor] = {}
    for index in range(max(wanted) + 1):
        sample = torch.randn((1, *latent.shape[1:]), dtype=latent.dtype, generator=generator, device="cpu")
        if index in wanted:
            drawn[index] = sample
    return torch.cat([drawn[index] for index in batch_index])


@dataclass(frozen=True)
class RandomNoise:
    """The NOISE value of a RandomNoise node: seeded initial noise; the seed also drives per-step noise."""

    seed: int

    def generate_noise(self, latent: dict[str, Any]) -> torch.Tensor:
        return prepare_noise(latent["samples"], self.seed, latent.get("batch_index"))


@dataclass(frozen=True)
class DisableNoise:
    """The NOISE value of a DisableNoise node: zeros. Per-step noise is still seeded (with 0, as ComfyUI)."""

    seed: int = 0

    def generate_noise(self, latent: dict[str, Any]) -> torch.Tensor:
        samples = latent["samples"]
        return torch.zeros(samples.shape, dtype=samples.dtype, device="cpu")


def default_noise_sampler(x: torch.Tensor, seed: int | None) -> NoiseSampler:
    """Fresh Gaussian noise at each call, from one generator seeded for the whole run.

    The largest seed, 2^64 - 1, wraps to 0 on the CPU, where ComfyUI fails with an overflow instead.
    """
    generator = None
    if seed is not None:
        cpu_seed = (seed + 1) % 2**64
        generator = torch.Generator(device=x.device).manual_seed(cpu_seed if x.device.type == "cpu" else seed)

    def sample(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)

    return sample


def _ordered(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    return (a, b, 1) if a < b else (b, a, -1)


class BrownianTreeNoiseSampler:
    """Noise as increments of one Brownian motion over sigma, so steps that share an interval share noise.

    The increment over [sigma_next, sigma] is divided by the interval's square root to be unit-variance.
    `on_cpu` keeps the tree on the CPU (the default samplers); the `_gpu` twins keep it on x's device.
    """

    def __init__(
        self,
        x: torch.Tensor,
        sigma_min: torch.Tensor,
        sigma_max: torch.Tensor,
        seed: int | None,
        on_cpu: bool,
    ) -> None:
        t0, t1, self.sign = _ordered(torch.as_tensor(sigma_min), torch.as_tensor(sigma_max))
        w0 = torch.zeros_like(x)
        if on_cpu:
            t0, w0, t1 = t0.detach().cpu(), w0.detach().cpu(), t1.detach().cpu()
        if seed is None:
            seed = int(torch.randint(0, 2**63 - 1, ()).item())
        self.on_cpu = on_cpu
        self.tree = torchsde.BrownianTree(t0, w0, t1, entropy=seed)

    def __call__(self, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = _ordered(t0, t1)
        device, dtype = lo.device, lo.dtype
        if self.on_cpu:
            lo, hi = lo.detach().cpu().float(), hi.detach().cpu().float()
        increment = self.tree(lo, hi).to(device=device, dtype=dtype) * (self.sign * sign)
        return increment / (t1 - t0).abs().sqrt()
