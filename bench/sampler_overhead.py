"""Sampling overhead per step: everything a KSampler step costs besides the model's forward.

    .venv/bin/python bench/sampler_overhead.py [--sizes 64 1024] [--steps 20] [--repeats 5] [--threads 1]
                                               [--samplers euler dpmpp_2m ...]

Target (issue 4): under 1 ms per step on CPU. The model is a no-op (a zero velocity, preallocated),
so a step's time is the sampler's arithmetic, the guider (batching, CFG), the per-step progress
report with its latent preview, and the interrupt check. Two cases: Flux (16-channel latent,
BasicGuider, cfg 1) and AuraFlow (4 channels, CFGGuider at cfg 3.5: two predictions per forward).
Figures are the median over the repeats of (run time / steps), so a run's one-off setup (noise,
schedule, conditioning) is included, spread over its steps.

At 64 px (an 8x8 latent) the arithmetic is negligible and the figure is the fixed per-step overhead,
the number the target is about. At 1024 px it includes the element-wise arithmetic on a full
128x128 latent, which on a GPU takes microseconds but on a CPU is most of the time.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from typing import Any

import torch

from engine.diffusion.latent_formats import FLUX, SDXL, LatentFormat
from engine.diffusion.protocols import ModelInputs
from engine.diffusion.sampling.model_sampling import DiscreteFlow, FlowModelSampling, FluxFlow
from engine.diffusion.sampling.samplers import SAMPLER_NAMES
from engine.nodes.sampling import KSampler
from engine.progress import node_context


class NoOpModel:
    """A DiffusionModel predicting zero velocity (x0 = x) at no cost: one zero tensor per input shape."""

    def __init__(self, model_sampling: FlowModelSampling, latent_format: LatentFormat) -> None:
        self.model_sampling = model_sampling
        self.latent_format = latent_format
        self.device = torch.device("cpu")
        self._zeros: dict[torch.Size, torch.Tensor] = {}

    def clone(self) -> NoOpModel:
        return NoOpModel(self.model_sampling, self.latent_format)

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        zeros = self._zeros.get(x.shape)
        if zeros is None:
            zeros = self._zeros[x.shape] = torch.zeros_like(x)
        return zeros


def conditioning(tokens: int, dim: int, **options: Any) -> list[list[Any]]:
    return [[torch.zeros(1, tokens, dim), options]]


def ms_per_step(
    model: NoOpModel, sampler: str, cfg: float, negative: Any, size: int, steps: int, repeats: int
) -> float:
    latent = {"samples": torch.zeros(1, model.latent_format.channels, size // 8, size // 8)}
    positive = conditioning(256, 64, pooled_output=torch.zeros(1, 768))
    samples = []
    with node_context("bench", lambda value, total, preview: None, threading.Event()):
        for _ in range(repeats):
            started = time.perf_counter()
            KSampler().sample(model, 1, steps, cfg, sampler, "simple", positive, negative, latent)
            samples.append((time.perf_counter() - started) / steps * 1e3)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 1024], help="image sides in pixels")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--samplers", nargs="*", default=SAMPLER_NAMES)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    flux = NoOpModel(FluxFlow(1.15), FLUX)
    auraflow = NoOpModel(DiscreteFlow(1.73), SDXL)
    negative = conditioning(256, 64, pooled_output=torch.zeros(1, 768))
    cases = [
        (size, label, model, cfg)
        for size in args.sizes
        for label, model, cfg in (("flux", flux, 1.0), ("aura", auraflow, 3.5))
    ]
    print(f"ms per step, no-op model, {args.steps} steps, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'sampler':32s}" + "".join(f"{f'{label} {size}px':>14s}" for size, label, _, _ in cases))
    worst = [0.0] * len(cases)
    for name in args.samplers:
        row = [
            ms_per_step(model, name, cfg, negative, size, args.steps, args.repeats)
            for size, _, model, cfg in cases
        ]
        worst = [max(w, ms) for w, ms in zip(worst, row, strict=True)]
        print(f"{name:32s}" + "".join(f"{ms:14.3f}" for ms in row))
    print(f"{'worst':32s}" + "".join(f"{ms:14.3f}" for ms in worst))


if __name__ == "__main__":
    main()
