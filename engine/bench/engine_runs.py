"""The engine's side of the benchmark: an endpoint served by the real service, as a user would meet it.

Each endpoint gets a fresh `Service` (SQLite store, worker, executor, the endpoint's graph from
graphs/*.json) over the benchmark's weights. Its start-up warm-up loads the models (load time is what
the model manager reports). Requests are the endpoint's own request values built into its graph, with
the image size set on the graph's nodes (the small size is below what the API lets a request ask
for) and submitted to the service's queue: one untimed at the benchmark size, then the timed ones one
at a time, each with its own prompt and seed so that no node's output is taken from the cache (a
repeated prompt would skip text encoding, which diffusers never does). Then one run through the
executor directly, with an event listener that synchronises the device at each sampling step, for the
per-node and per-step times; then `concurrent` requests submitted at once, for throughput (with none,
throughput is the timed requests' sequential rate, to save the time of a long endpoint's extra runs).

For the comparison with diffusers, one more run (with the sampler diffusers' pipelines use) records
what the graph fed the diffusion transformer, through a forward pre-hook on the resident module: the
initial noise, the conditioning, the guidance and the schedule (one timestep per step). Its image is
also what a variant (a memory mode, fp8) is compared with: the same request on the default settings.

A case's `runs` caps the timed requests asked for (a mode that streams its weights at every forward).
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.bench.measure import GpuBusySampler, read_peak, release, reset_peak, synchronize
from engine.bench.results import SystemResult, Throughput
from engine.bench.work import ImageWork
from engine.diffusion.model_manager import ModelKey
from engine.endpoints import Endpoint
from engine.graph.events import Event, ExecutionFailed, NodeFinished, NodeProgress, NodeStarted
from engine.graph.validate import validate_prompt
from engine.jobs.outputs import JobOutputs
from engine.jobs.types import Job, JobStatus
from engine.performance import PerformanceSettings
from engine.service import Service
from engine.settings import Settings

PROMPT = "a glass filled with glowing fizzy rainbow drink on a table in a dark forest at night"
COMPARE_PROMPT = "a photo of a cat sitting on a red chair"
READY_POLL_SECONDS = 0.01
READY_TIMEOUT_SECONDS = 3600.0
JOB_TIMEOUT_SECONDS = 3600.0
CAPTURED_INPUTS = ("hidden_states", "encoder_hidden_states", "pooled_projections", "timestep", "guidance")


@dataclass(frozen=True)
class Case:
    """How an endpoint is benchmarked: its request values, and what the comparison run changes."""

    name: str
    endpoint: str
    steps: int
    cfg: float
    fields: dict[str, Any]
    compare_fields: dict[str, Any] = field(default_factory=dict)
    """AuraFlow's graph samples with UniPC; diffusers' AuraFlowPipeline with Euler: the comparison
    run asks the endpoint for Euler (one of its sampler choices) so the two are one computation."""
    node_inputs: dict[tuple[str, str], Any] = field(default_factory=dict)
    """(node class, input) -> value set on the built graph: a variant no request field reaches."""
    performance: PerformanceSettings = field(default_factory=PerformanceSettings)
    """The service's speed and memory switches: a memory mode is a variant no graph input reaches."""
    runs: int | None = None
    """At most this many timed requests, for a mode so slow that one is what a time budget allows."""
    baseline: bool = True
    """Whether diffusers runs it too (it has no counterpart of an engine-only variant)."""

    @property
    def guided(self) -> bool:
        return self.cfg != 1.0

    @property
    def mode(self) -> dict[str, Any]:
        """What this case changes from its endpoint's default run: graph inputs ("class.input") and the
        performance settings that differ from their defaults (by field name); empty for the default."""
        changed: dict[str, Any] = {f"{cls}.{name}": value for (cls, name), value in self.node_inputs.items()}
        default = PerformanceSettings()
        for setting in fields(PerformanceSettings):
            value = getattr(self.performance, setting.name)
            if value != getattr(default, setting.name):
                changed[setting.name] = value
        return changed


CASES: dict[str, Case] = {
    "aura-flow": Case(
        "aura-flow",
        "aura-flow",
        25,
        5.0,
        {"steps": 25, "cfg": 5, "negative_prompt": ""},
        {"sampler": "euler"},
    ),
    "flux-schnell": Case("flux-schnell", "flux-schnell", 4, 1.0, {"steps": 4}),
    "flux-dev": Case("flux-dev", "flux-dev", 28, 1.0, {"steps": 28}),
    "flux-dev-fp8": Case(
        "flux-dev-fp8",
        "flux-dev",
        28,
        1.0,
        {"steps": 28},
        node_inputs={("UNETLoader", "weight_dtype"): "fp8_e4m3fn_fast"},
        baseline=False,
    ),
    "flux-dev-offload": Case(
        "flux-dev-offload",
        "flux-dev",
        28,
        1.0,
        {"steps": 28},
        performance=PerformanceSettings(offload_text_encoders="always"),
        baseline=False,
    ),
    "flux-dev-sequential": Case(
        "flux-dev-sequential",
        "flux-dev",
        28,
        1.0,
        {"steps": 28},
        performance=PerformanceSettings(sequential_offload=True),
        runs=1,
        baseline=False,
    ),
}
"""The issue's three runs (aura-flow 25 steps at cfg 5, flux-schnell 4 steps, flux-dev 28 steps),
flux-dev with its diffusion model loaded as `fp8_e4m3fn_fast`, the opt-in fp8 path, and flux-dev in
the two memory modes: text encoders moved to host memory after each encode (on a GPU only), and the
transformer's blocks streamed from host memory one at a time (each forward moves all ~24 GB of them
to the GPU and back at full size, hence one timed request). The variants run on the engine only."""


@dataclass
class Capture:
    """The inputs of every transformer forward of one run, on the CPU, in call order."""

    calls: list[dict[str, torch.Tensor]] = field(default_factory=list)

    def hook(self, module: torch.nn.Module) -> Callable[..., None]:
        signature = inspect.signature(module.forward)

        def record(_: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            bound = signature.bind_partial(*args, **kwargs).arguments
            self.calls.append(
                {
                    name: value.detach().float().cpu().clone()
                    for name, value in bound.items()
                    if name in CAPTURED_INPUTS and isinstance(value, torch.Tensor)
                }
            )

        return record


@dataclass
class EngineOutcome:
    result: SystemResult
    capture: Capture | None
    image: torch.Tensor | None
    """The comparison run's image, [3, H, W] in [0, 1], read back from the PNG the graph wrote."""
    image_file: Path | None
    """That PNG, in the bench's work folder (gone when the benchmark ends)."""


def _already_resident() -> torch.nn.Module:
    raise RuntimeError("the diffusion model is not resident after the run")


def resident_transformer(service: Service) -> torch.nn.Module:
    """The diffusion transformer the endpoint's graph used last (the model manager's resident module)."""
    keys: list[ModelKey] = [
        key for key in service.models.resident() if key.part.startswith("diffusion_model")
    ]
    if not keys:
        raise RuntimeError("no diffusion model is resident after the run")
    return service.models.load(keys[-1], _already_resident)  # resident() lists the most recent last


class EngineBench:
    """One endpoint served by a fresh service whose data lives under `work_dir`."""

    def __init__(
        self,
        models_dir: Path,
        graphs_dir: Path,
        work_dir: Path,
        device: torch.device,
        side: int,
    ) -> None:
        self.models_dir = models_dir
        self.graphs_dir = graphs_dir
        self.work_dir = work_dir
        self.device = device
        self.side = side

    def settings(self, case: Case) -> Settings:
        """A variant (node inputs no request field reaches) skips the service's warm-up, which would load
        the endpoint's own models beside the variant's; its first request loads them instead."""
        base = self.work_dir / case.name
        return Settings(
            base_dir=base,
            models_dir=self.models_dir,
            output_dir=base / "output",
            data_dir=base / "data",
            graphs_dir=self.graphs_dir,
            custom_nodes_dirs=(),
            open_access=True,
            test_models=False,
            warmup_endpoints=(case.endpoint,) if not case.node_inputs else (),
            performance=case.performance,
        )

    def prompt(
        self, endpoint: Endpoint, case: Case, text: str, seed: int, job_id: str, compare: bool = False
    ) -> dict[str, Any]:
        """The endpoint's graph for a request, at the benchmark's image size."""
        values = {"prompt": text, "seed": seed, **case.fields, **(case.compare_fields if compare else {})}
        prompt = endpoint.build(
            endpoint.parse(values, strings=False), output_prefix=JobOutputs.prefix(job_id)
        )
        for node in prompt.values():
            inputs = node["inputs"]
            for (class_type, name), value in case.node_inputs.items():
                if node["class_type"] == class_type:
                    inputs[name] = value
            for name in ("width", "height"):
                if isinstance(inputs.get(name), int) and not isinstance(inputs.get(name), bool):
                    inputs[name] = self.side
        if compare:
            prompt[endpoint.output.node]["inputs"]["format"] = "png"
        return prompt

    async def run(
        self, case: Case, work: ImageWork, runs: int, concurrent: int, compare: bool
    ) -> EngineOutcome:
        runs = min(runs, case.runs) if case.runs is not None else runs
        release(self.device)
        reset_peak(self.device)
        loads: list[float] = []
        started = time.perf_counter()
        service = Service(self.settings(case))
        service.models.add_load_listener(lambda _key, seconds: loads.append(seconds))
        await service.start(render_webhook=lambda _job: {})
        try:
            await _ready(service, case.endpoint)
            endpoint = service.endpoints[case.endpoint]
            runner = _Runner(self, service, endpoint, case)
            await runner.request(PROMPT + ", warm-up", seed=0)
            startup = time.perf_counter() - started
            with GpuBusySampler(self.device) as busy:
                latencies = [
                    (await runner.request(f"{PROMPT}, take {i}", seed=1 + i))[0] for i in range(runs)
                ]
            stages, steps = await asyncio.to_thread(runner.profile, f"{PROMPT}, profiled", 100)
            capture = image = image_file = None
            if compare:  # a variant's image is compared with its endpoint's default run's
                capture, image, image_file = await asyncio.to_thread(runner.compare_run)
            if concurrent:
                throughput = await runner.throughput(concurrent)
            else:
                throughput = Throughput.sequential(latencies, busy.percent)
            peak = read_peak(self.device)
        finally:
            await service.stop()
            service.models.unload_all()
            service.executor.cache.clear()
        release(self.device)
        result = SystemResult.measured(
            "engine",
            work=work,
            steps=case.steps,
            latencies=latencies,
            step_intervals=steps,
            load_s=sum(loads),
            startup_s=startup,
            stages_s=stages,
            peak=peak,
            throughput=throughput,
            notes=[
                "latency: submit to the service's queue until the job is stored as completed (its image "
                "written); each request has its own prompt and seed, so no node output is reused",
            ],
        )
        return EngineOutcome(result, capture, image, image_file)


async def _ready(service: Service, endpoint: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not service.readiness.ready:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the service did not become ready: {service.readiness.reason}")
        await asyncio.sleep(READY_POLL_SECONDS)
    served = service.endpoints.get(endpoint)
    if served is None or served.unavailable is not None:
        why = served.unavailable if served is not None else "no such endpoint in the graphs folder"
        raise RuntimeError(f"{endpoint} cannot be served: {why}")


class _Runner:
    def __init__(self, bench: EngineBench, service: Service, endpoint: Endpoint, case: Case) -> None:
        self.bench = bench
        self.service = service
        self.endpoint = endpoint
        self.case = case

    async def submit(self, text: str, seed: int, compare: bool = False) -> Job:
        job_id = str(uuid.uuid4())
        return await self.service.submit_graph(
            self.bench.prompt(self.endpoint, self.case, text, seed, job_id, compare),
            job_id=job_id,
            api="bench",
            endpoint=self.endpoint.id,
            key=None,
            base_url="http://bench.invalid",
            targets=(self.endpoint.output.node,),
            extra_data={},
        )

    async def finished(self, job: Job) -> Job:
        done = await self.service.wait(job.id, JOB_TIMEOUT_SECONDS)
        if done is None or done.status != JobStatus.COMPLETED:
            status = done.status if done is not None else "lost"
            raise RuntimeError(f"{self.endpoint.id} request {job.id} ended {status}: {done and done.error}")
        return done

    async def request(self, text: str, seed: int) -> tuple[float, Job]:
        """One request through the queue: (seconds from submission to completion, the finished job)."""
        started = time.perf_counter()
        job = await self.finished(await self.submit(text, seed))
        return time.perf_counter() - started, job

    async def throughput(self, count: int) -> Throughput:
        """`count` requests submitted at once, as the service runs them; then as many again with the
        worker's overlapping of jobs switched the other way (its setting is read at each claim, and the
        worker is idle between the two batches)."""
        served = await self._batch(count, "concurrent")
        worker = self.service.worker
        assert worker is not None
        setting = worker.overlap
        worker.overlap = None if setting is not None else self.service.device_thread
        try:
            other = await self._batch(count, "the other way")
        finally:
            worker.overlap = setting
        return replace(served, other_mode=other)

    async def _batch(self, count: int, label: str) -> Throughput:
        """`count` requests submitted at once, taken from the queue by the worker."""
        assert self.service.worker is not None
        overlapped = self.service.worker.overlap is not None
        with GpuBusySampler(self.bench.device) as busy:
            started = time.perf_counter()
            jobs = [await self.submit(f"{PROMPT}, {label} {i}", seed=1000 + i) for i in range(count)]

            async def latency(job: Job) -> float:
                await self.finished(job)
                return time.perf_counter() - started

            latencies = await asyncio.gather(*(latency(job) for job in jobs))
            wall = time.perf_counter() - started
        return Throughput(
            requests=count,
            concurrent=True,
            wall_s=wall,
            images_per_s=count / wall,
            mean_latency_s=statistics.fmean(latencies),
            gpu_busy_percent=busy.percent,
            overlapped=overlapped,
        )

    def execute(self, prompt: dict[str, Any], on_event: Callable[[Event], None]) -> dict[str, Any]:
        """Run a graph on the service's executor (the worker is idle); its UI outputs."""
        validation = validate_prompt(self.service.registry, prompt, (self.endpoint.output.node,))
        if validation.validated is None:
            raise RuntimeError(
                f"the benchmark's {self.endpoint.id} graph is invalid: {validation.node_errors}"
            )
        result = self.service.executor.run(
            validation.validated, prompt_id=str(uuid.uuid4()), on_event=on_event
        )
        if isinstance(result.failure, ExecutionFailed):
            failure = result.failure
            raise RuntimeError(f"{failure.node_type} failed: {failure.exception_message}")
        if result.status != "success":
            raise RuntimeError(f"the profiled {self.endpoint.id} run ended {result.status}")
        return dict(result.outputs)

    def profile(self, text: str, seed: int) -> tuple[dict[str, float], list[float]]:
        """Seconds per node class, and the time between consecutive sampling steps, of one run."""
        device = self.bench.device
        starts: dict[str, float] = {}
        classes: dict[str, str] = {}
        stages: dict[str, float] = {}
        step_marks: dict[str, list[float]] = {}

        def on_event(event: Event) -> None:
            if isinstance(event, NodeStarted):
                synchronize(device)
                starts[event.node_id] = time.perf_counter()
                classes[event.node_id] = event.class_type
            elif isinstance(event, NodeProgress):
                synchronize(device)
                step_marks.setdefault(event.node_id, []).append(time.perf_counter())
            elif isinstance(event, NodeFinished) and event.node_id in starts:
                synchronize(device)
                name = classes[event.node_id]
                stages[name] = stages.get(name, 0.0) + time.perf_counter() - starts[event.node_id]

        job_id = str(uuid.uuid4())
        self.execute(self.bench.prompt(self.endpoint, self.case, text, seed, job_id), on_event)
        sampler = max(step_marks.values(), key=len, default=[])  # the node reporting the most steps
        return stages, [later - earlier for earlier, later in itertools.pairwise(sampler)]

    def compare_run(self) -> tuple[Capture, torch.Tensor, Path]:
        """The comparison request: the transformer's inputs at every forward, the image it wrote, and
        where."""
        capture = Capture()
        module = resident_transformer(self.service)
        handle = module.register_forward_pre_hook(capture.hook(module), with_kwargs=True)
        job_id = str(uuid.uuid4())
        try:
            outputs = self.execute(
                self.bench.prompt(self.endpoint, self.case, COMPARE_PROMPT, 7, job_id, compare=True),
                lambda _: None,
            )
        finally:
            handle.remove()
        saved = outputs[self.endpoint.output.node]["images"][0]
        path = self.service.outputs.output_dir / saved.get("subfolder", "") / saved["filename"]
        with Image.open(path) as png:
            pixels = np.asarray(png.convert("RGB"), dtype=np.float32) / 255.0
        return capture, torch.from_numpy(pixels).permute(2, 0, 1), path
