"""One benchmark run: for each endpoint, its weights, the engine's figures, diffusers' on the same files,
and (at the small size by default) whether the two made the same image. A variant of an endpoint (a
memory mode, fp8 weights; engine only) is reported beside that endpoint's default run when it ran
earlier: latency and per-step time as ratios, peak memory saved, and how far its image is from the
default's on the same request.

Endpoints run one after another, the engine first, each system alone on the device (the other's models
unloaded), so each peak-memory figure is its own. The JSON and markdown files are rewritten after every
endpoint, so a run stopped by a time limit still leaves what it finished.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from engine.bench.diffusers_runs import DiffusersBench
from engine.bench.engine_runs import CASES, Case, EngineBench
from engine.bench.report import markdown
from engine.bench.results import BenchReport, Comparison, EndpointResult, ModeCost, SystemResult, Work
from engine.bench.weights import MODEL_SIZES, Size, WeightsCache
from engine.bench.work import ImageWork, image_work
from engine.diffusion.model_manager import default_device, default_dtype

log = logging.getLogger(__name__)

ENDPOINTS = ("flux-schnell", "flux-dev", "aura-flow")
"""The default order: the two Flux endpoints share their encoders and VAE, so with --evict-weights those
files are written once and deleted after flux-dev."""

TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1 / 255, 0.01 / 255),
    torch.bfloat16: (0.5, 0.05),
}
"""(max, mean) absolute difference per pixel channel, in [0, 1], for the two images to count as equal,
once diffusers' image is written to 8 bits as the engine's PNG is (ComfyUI's SaveImage: 255 x, clipped,
truncated).

In float32 the two samplings agree to about 1e-6, so the 8-bit images are the same but where a value
lies within that of a level boundary: at most one level apart, in under 1 % of the values. In bf16 on a
GPU the two sides' rounding diverges over the steps (PERF.md: PSNR ~19 dB between compiled and eager
after 28 steps), so there the figure is a sanity check (the same image, not the same pixels)."""


@dataclass(frozen=True)
class BenchOptions:
    size: Size
    cache_dir: Path
    graphs_dir: Path
    endpoints: tuple[str, ...] = ENDPOINTS
    runs: int = 3
    concurrent: int = 8
    throughput_endpoints: tuple[str, ...] | None = None
    """The endpoints that get the `concurrent` requests at once; None: all. The others report their
    timed requests' sequential rate (eight 28-step 1024^2 requests cost most of a minute)."""
    diffusers: bool = True
    compare: bool = True
    evict_weights: bool = False
    threads: int | None = None
    """torch's CPU threads; None: torch's default, except 1 for the small size on a CPU, where tiny
    matrices gain nothing from threads and a shared CI machine makes them wait on each other (seen
    here: a tiny Flux forward took 8 ms on one thread and 160 to 1100 ms on two)."""
    time_budget_s: float | None = None
    json_path: Path | None = None
    markdown_path: Path | None = None
    images_dir: Path | None = None
    """Where each compared image is copied as <case>.png (the PNG the endpoint's graph wrote), to be
    looked at or checked beside the figures; None: not kept."""


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("engine", "torch", "diffusers", "transformers", "safetensors"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def _work(case: Case, cache: WeightsCache) -> ImageWork:
    sizes, encoders = cache.sizes, cache.sizes.text_encoders
    if case.endpoint == "aura-flow":
        return image_work(
            sizes.auraflow, [encoders["pile_t5xl"]], sizes.sdxl_vae, sizes.image_side, case.steps, case.guided
        )
    config = sizes.flux_schnell if case.endpoint == "flux-schnell" else sizes.flux_dev
    return image_work(
        config, [encoders["t5xxl"], encoders["clip_l"]], sizes.flux_ae, sizes.image_side, case.steps, False
    )


def saved_levels(image: torch.Tensor) -> torch.Tensor:
    """An image in [0, 1] as the 8-bit levels the engine writes (ComfyUI's SaveImage: 255 x, clipped,
    truncated)."""
    return torch.floor((255.0 * image.double()).clamp(0, 255))


def compare_images(engine: torch.Tensor, diffusers: torch.Tensor, dtype: torch.dtype) -> Comparison:
    """The engine's saved image (levels / 255, as read back) against diffusers' float image written to
    8 bits the same way, compared level by level and reported in [0, 1] units."""
    levels = (torch.round(255.0 * engine.double()) - saved_levels(diffusers)).abs() / 255.0
    tolerance_max, tolerance_mean = TOLERANCES.get(dtype, TOLERANCES[torch.bfloat16])
    max_diff, mean_diff = float(levels.max()), float(levels.mean())
    return Comparison(
        what=f"8-bit image {'x'.join(map(str, engine.shape))}, same noise, conditioning and sigmas",
        max_abs_diff=max_diff,
        mean_abs_diff=mean_diff,
        tolerance_max=tolerance_max,
        tolerance_mean=tolerance_mean,
        equal=max_diff <= tolerance_max and mean_diff <= tolerance_mean,
    )


def _against_default(
    case: Case, ours: SystemResult, report: BenchReport, images: dict[str, torch.Tensor]
) -> ModeCost | None:
    """A variant's figures beside its endpoint's default run, if that ran (and finished) before it."""
    if case.name == case.endpoint:
        return None
    theirs = next((e.engine for e in report.endpoints if e.endpoint == case.endpoint), None)
    if theirs is None:
        return None
    image_diff = None
    if case.name in images and case.endpoint in images:
        difference = (images[case.name].double() - images[case.endpoint].double()).abs()
        image_diff = float(difference.max()), float(difference.mean())
    return ModeCost.of(case.endpoint, ours, theirs, image_diff)


def _write(report: BenchReport, options: BenchOptions) -> None:
    if options.json_path is not None:
        options.json_path.parent.mkdir(parents=True, exist_ok=True)
        options.json_path.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    if options.markdown_path is not None:
        options.markdown_path.parent.mkdir(parents=True, exist_ok=True)
        options.markdown_path.write_text(markdown(report))


def run_bench(options: BenchOptions, say: Callable[[str], None] = log.info) -> BenchReport:
    unknown = [name for name in options.endpoints if name not in CASES]
    if unknown:
        raise ValueError(f"unknown endpoints {unknown}; the benchmark runs {', '.join(CASES)}")
    started = time.perf_counter()
    device = default_device()
    threads = options.threads or (1 if options.size == "small" and device.type == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)
    dtype = default_dtype(device)
    sizes = MODEL_SIZES[options.size]
    cache = WeightsCache(options.cache_dir, sizes, device)
    report = BenchReport(
        size=options.size,
        device=_device_name(device),
        dtype=str(dtype).removeprefix("torch."),
        versions=_versions(),
        weights_dir=str(cache.models_dir),
    )
    if device.type != "cuda":
        report.notes.append(
            "no CUDA device: these figures show the whole path works, not how fast a GPU runs it"
        )
    images: dict[str, torch.Tensor] = {}  # comparison images by case: a variant's beside its endpoint's
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as work_dir:
        engine = EngineBench(cache.models_dir, options.graphs_dir, Path(work_dir), device, sizes.image_side)
        baseline = DiffusersBench(cache, device, dtype, sizes.image_side)
        for index, name in enumerate(options.endpoints):
            case = CASES[name]
            work = _work(case, cache)
            result = EndpointResult(
                endpoint=name,
                width=sizes.image_side,
                height=sizes.image_side,
                steps=case.steps,
                cfg=case.cfg,
                mode=case.mode,
                work=Work(
                    image_tokens=work.image_tokens,
                    text_tokens=work.text_tokens,
                    transformer_tflop_per_forward=work.transformer_per_forward / 1e12,
                    forwards=work.forwards,
                    transformer_tflop=work.transformer / 1e12,
                    text_encoders_tflop=work.text_encoders / 1e12,
                    vae_decode_tflop=work.vae_decode / 1e12,
                    transformer_bound_s=work.transformer_bound_seconds,
                ),
            )
            report.endpoints.append(result)
            elapsed = time.perf_counter() - started
            if options.time_budget_s is not None and elapsed > options.time_budget_s:
                result.errors.append(f"skipped: the time budget ({options.time_budget_s:.0f} s) was spent")
                continue
            try:
                say(f"{name}: weights")
                written = cache.ensure(case.endpoint)
                listed = {w.relative_path for w in report.weights}
                report.weights.extend(w for w in written if w.relative_path not in listed)
                say(f"{name}: engine")
                throughput_run = options.throughput_endpoints is None or name in options.throughput_endpoints
                concurrent = options.concurrent if throughput_run else 0
                outcome = asyncio.run(engine.run(case, work, options.runs, concurrent, options.compare))
                result.engine = outcome.result
                if outcome.image is not None:
                    images[name] = outcome.image
                if outcome.image_file is not None and options.images_dir is not None:
                    options.images_dir.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(outcome.image_file, options.images_dir / f"{name}.png")
                result.against_default = _against_default(case, outcome.result, report, images)
                if options.diffusers and case.baseline:
                    say(f"{name}: diffusers")
                    capture = outcome.capture if options.compare else None
                    theirs = baseline.run(case, work, options.runs, capture)
                    result.diffusers = theirs.result
                    result.speedup = theirs.result.latency.median_s / outcome.result.latency.median_s
                    if outcome.image is not None and theirs.image is not None:
                        result.comparison = compare_images(outcome.image, theirs.image, dtype)
            except Exception as error:  # one endpoint failing must not lose the others' figures
                log.error("%s failed:\n%s", name, traceback.format_exc())
                result.errors.append(f"{type(error).__name__}: {error}")
            if options.evict_weights:
                cache.evict(
                    case.endpoint, tuple(CASES[later].endpoint for later in options.endpoints[index + 1 :])
                )
            report.total_s = time.perf_counter() - started
            _write(report, options)
    report.total_s = time.perf_counter() - started
    _write(report, options)
    return report
