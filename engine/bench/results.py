"""What a benchmark run records: one `EndpointResult` per endpoint, the engine's and diffusers' figures
side by side, gathered in a `BenchReport` that is written as JSON (every field present; null where a
figure does not apply or could not be measured, with the reason in `notes`)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.bench.measure import Peak
from engine.bench.weights import WrittenFile
from engine.bench.work import ImageWork


@dataclass
class Latency:
    """Seconds from submitting one request to its image being written, one request at a time."""

    median_s: float
    min_s: float
    runs_s: list[float]

    @classmethod
    def of(cls, runs: list[float]) -> Latency:
        return cls(statistics.median(runs), min(runs), runs)


@dataclass
class Throughput:
    requests: int
    concurrent: bool
    """True: all submitted at once to the service's queue; False: one call after another (diffusers has
    no queue, so its figure is its sequential rate over the timed runs)."""
    wall_s: float
    images_per_s: float
    mean_latency_s: float
    """Per request, from submission to completion (queueing included when concurrent)."""
    gpu_busy_percent: float | None
    """NVML's mean utilisation over the window; None without a GPU."""
    overlapped: bool | None = None
    """Whether the engine's worker overlapped jobs (the next one sampling while the last one decodes and
    saves: PerformanceSettings.overlap_jobs); None where requests were not queued at once."""
    other_mode: Throughput | None = None
    """The same number of requests at once with the worker's overlapping switched the other way: what
    overlapping buys (None for a figure that is not the engine's queue)."""

    @classmethod
    def sequential(cls, latencies: list[float], gpu_busy_percent: float | None) -> Throughput:
        """The rate of timed requests made one after another."""
        return cls(
            requests=len(latencies),
            concurrent=False,
            wall_s=sum(latencies),
            images_per_s=len(latencies) / sum(latencies),
            mean_latency_s=statistics.fmean(latencies),
            gpu_busy_percent=gpu_busy_percent,
        )


@dataclass
class SystemResult:
    """One system (the engine, or diffusers) running one endpoint."""

    system: str
    load_s: float
    """Reading the weights and making them resident on the device."""
    startup_s: float
    """From nothing to the first image at the benchmark's size: the engine's service start (with its
    warm-up run) and first request, or diffusers' pipeline construction and first call."""
    latency: Latency
    per_step_s: float | None
    """Median time between consecutive sampling steps (device synchronised at each); None for 1 step."""
    stages_s: dict[str, float]
    """Time per graph node class (engine) or pipeline phase (diffusers) in one profiled run."""
    transformer_tflops: float | None
    """The sampling loop's achieved rate: transformer work per step / per_step_s."""
    image_tflops: float
    """All of an image's work (encoders, transformer, VAE) / median latency."""
    bound_fraction: float
    """PERF.md's transformer-only lower bound on the H200 / median latency (1.0 would be the bound)."""
    peak_memory_bytes: int
    peak_memory_kind: str
    throughput: Throughput
    notes: list[str] = field(default_factory=list)

    @classmethod
    def measured(
        cls,
        system: str,
        *,
        work: ImageWork,
        steps: int,
        latencies: list[float],
        step_intervals: list[float],
        load_s: float,
        startup_s: float,
        stages_s: dict[str, float],
        peak: Peak,
        throughput: Throughput,
        notes: list[str],
    ) -> SystemResult:
        """The result whose rates are derived from the timings the same way for every system."""
        latency = Latency.of(latencies)
        per_step = statistics.median(step_intervals) if step_intervals else None
        return cls(
            system=system,
            load_s=load_s,
            startup_s=startup_s,
            latency=latency,
            per_step_s=per_step,
            stages_s=stages_s,
            transformer_tflops=work.transformer / steps / per_step / 1e12 if per_step else None,
            image_tflops=work.total / latency.median_s / 1e12,
            bound_fraction=work.transformer_bound_seconds / latency.median_s,
            peak_memory_bytes=peak.bytes,
            peak_memory_kind=peak.kind,
            throughput=throughput,
            notes=notes,
        )


@dataclass
class Comparison:
    """The engine's image against diffusers' on the same weights, noise, schedule and conditioning."""

    what: str
    max_abs_diff: float
    mean_abs_diff: float
    tolerance_max: float
    tolerance_mean: float
    equal: bool


@dataclass
class Work:
    """PERF.md's work model for one image of the endpoint (engine.bench.work), in TFLOP."""

    image_tokens: int
    text_tokens: int
    transformer_tflop_per_forward: float
    forwards: int
    transformer_tflop: float
    text_encoders_tflop: float
    vae_decode_tflop: float
    transformer_bound_s: float


@dataclass
class ModeCost:
    """A variant of an endpoint (a memory mode, fp8 weights) against the endpoint's default run in the
    same report: what the mode costs in time, what it saves in memory, and whether its image changed."""

    default: str
    """The row compared with: the endpoint run on the default settings."""
    latency_ratio: float
    """The variant's median latency / the default's (above 1: the mode is slower)."""
    per_step_ratio: float | None
    peak_memory_saved_bytes: int
    """The default's peak memory minus the variant's (negative: the mode needs more)."""
    load_ratio: float | None
    """The variant's load time / the default's; None when the default loaded nothing it timed."""
    image_max_abs_diff: float | None
    """Largest difference of the two comparison images' 8-bit values, in [0, 1] units (0: the same
    pixels); None without a comparison run (--no-compare, the default at full size)."""
    image_mean_abs_diff: float | None

    @classmethod
    def of(
        cls,
        default: str,
        ours: SystemResult,
        theirs: SystemResult,
        image_diff: tuple[float, float] | None,
    ) -> ModeCost:
        ours_step, theirs_step = ours.per_step_s, theirs.per_step_s
        return cls(
            default=default,
            latency_ratio=ours.latency.median_s / theirs.latency.median_s,
            per_step_ratio=ours_step / theirs_step if ours_step and theirs_step else None,
            peak_memory_saved_bytes=theirs.peak_memory_bytes - ours.peak_memory_bytes,
            load_ratio=ours.load_s / theirs.load_s if theirs.load_s > 0 else None,
            image_max_abs_diff=image_diff[0] if image_diff is not None else None,
            image_mean_abs_diff=image_diff[1] if image_diff is not None else None,
        )


@dataclass
class EndpointResult:
    endpoint: str
    """The case's name: the endpoint, or one of its variants (engine.bench.engine_runs.CASES)."""
    width: int
    height: int
    steps: int
    cfg: float
    work: Work
    mode: dict[str, Any] = field(default_factory=dict)
    """What a variant changes from its endpoint's default run (engine_runs.Case.mode); empty for it."""
    against_default: ModeCost | None = None
    """A variant's cost beside its endpoint's default run, when that ran earlier in the same report."""
    engine: SystemResult | None = None
    diffusers: SystemResult | None = None
    speedup: float | None = None
    """diffusers' median latency / the engine's (above 1: the engine is faster)."""
    comparison: Comparison | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class BenchReport:
    size: str
    device: str
    dtype: str
    versions: dict[str, str]
    weights_dir: str
    weights: list[WrittenFile] = field(default_factory=list)
    endpoints: list[EndpointResult] = field(default_factory=list)
    total_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
