"""The service's Prometheus metrics: queue depth and wait, inference time, model load time, memory,
and the output cache's size against its limit.

What this process did (jobs it ran, their times, its memory) is its own: in a fleet each worker serves
its own /metrics (`engine worker --metrics-port`). What the fleet holds (jobs waiting per endpoint,
workers alive) is read from the store and the worker registry, so every API process reports the same."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from engine.graph.cache import OutputCache
from engine.jobs.types import Job

SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self, memory: Callable[[], Mapping[str, float]], cache: OutputCache) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.queue_depth = Gauge("engine_queue_depth", "Jobs waiting to run", registry=self.registry)
        self.endpoint_queue_depth = Gauge(
            "engine_fleet_queue_depth",
            "Jobs waiting to run, per endpoint, in the whole fleet",
            ["endpoint"],
            registry=self.registry,
        )
        self.workers_alive = Gauge(
            "engine_fleet_workers_alive",
            "Workers whose heartbeat is current (1 in the embedded default while its worker runs)",
            registry=self.registry,
        )
        Gauge(
            "engine_output_cache_bytes",
            "Memory held by node outputs kept between runs",
            registry=self.registry,
        ).set_function(lambda: cache.nbytes)
        Gauge(
            "engine_output_cache_limit_bytes",
            "The output cache's limit (--cache-size): least recently used outputs are dropped beyond it",
            registry=self.registry,
        ).set_function(lambda: cache.max_bytes)
        self._memory = memory
        self.memory = Gauge(
            "engine_memory_bytes",
            "Memory in use by kind (model weights, device allocations)",
            ["kind"],
            registry=self.registry,
        )
        self.jobs = Counter(
            "engine_jobs_finished",
            "Jobs that reached a final state",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "engine_queue_wait_seconds",
            "Time from submission to the start of running",
            ["endpoint"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.inference = Histogram(
            "engine_inference_seconds",
            "Time running a job's graph",
            ["endpoint"],
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.model_load = Histogram(
            "engine_model_load_seconds",
            "Time loading a model from its file",
            buckets=SECONDS_BUCKETS,
            registry=self.registry,
        )

    def observe_job(self, job: Job) -> None:
        self.jobs.labels(job.endpoint, job.status).inc()
        if "queue_time" in job.metrics:
            self.queue_wait.labels(job.endpoint).observe(job.metrics["queue_time"])
        if "inference_time" in job.metrics:
            self.inference.labels(job.endpoint).observe(job.metrics["inference_time"])

    def observe_model_load(self, seconds: float) -> None:
        self.model_load.observe(seconds)

    def render(self, queue_depth: int, depths: Mapping[str, int], workers_alive: int) -> bytes:
        """The exposition text; the fleet's figures are read by the caller, which can await the store."""
        self.queue_depth.set(queue_depth)
        self.endpoint_queue_depth.clear()  # an endpoint whose queue emptied shows no stale figure
        for endpoint, depth in depths.items():
            self.endpoint_queue_depth.labels(endpoint).set(depth)
        self.workers_alive.set(workers_alive)
        for kind, value in self._memory().items():
            self.memory.labels(kind).set(value)
        return generate_latest(self.registry)
