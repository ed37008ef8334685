"""Where one device's samplers run: a thread of their own, one sampling run at a time, in arrival order.

Two reasons to give the diffusion model one thread:
- CUDA graphs: torch.compile's CUDA graph trees belong to the thread that records them, with a memory
  pool each. Graph runs land on whichever worker thread is free, so a model sampled from several threads
  would record its graphs again on each, in memory of its own. Run on one thread, a graph is recorded
  once and replayed by every job.
- Overlapping jobs (PerformanceSettings.overlap_jobs): while one job samples, the job before it decodes
  its latent and compresses and writes its PNG, and the next one encodes its prompt. Those stages are
  short beside sampling, and much of them is host work that would otherwise leave the device idle
  between jobs. Two samplers at once would only share the device, their interleaved steps making both
  late; queued on one thread, each runs alone, in the order they asked.

The sampler nodes (KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced) hand their step loop
to `run`, which carries the node's context (progress reports, interrupts: engine.progress) to the
thread. The worker learns when a job's sampling is over, the moment to take the next job, by `watching`
the runs its graph's thread hands over.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from engine.progress import Interrupted, throw_if_interrupted

T = TypeVar("T")

WAIT_CHECK_SECONDS = 0.05
"""How often a sampler waiting for its turn looks whether its run was interrupted."""

_watcher: contextvars.ContextVar[tuple[DeviceThread, Callable[[], None]] | None] = contextvars.ContextVar(
    "engine_sampling_watcher", default=None
)


class DeviceThread:
    """The thread one device's sampling runs on (one per service; the executor gives it to sampler
    nodes as the `device_thread` resource)."""

    def __init__(self, name: str) -> None:
        self._thread: threading.Thread | None = None
        self._pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix=f"sampling-{name}", initializer=self._started
        )

    def run(self, function: Callable[[], T]) -> T:
        """`function()` on the device's thread, after the runs handed over before it, with the caller's
        context. While it waits for its turn, an interrupt of the caller's run (engine.progress) takes it
        out of the line."""
        if threading.current_thread() is self._thread:  # a sampler inside a sampler: already here
            return function()
        future = self._pool.submit(contextvars.copy_context().run, function)
        try:
            while True:
                try:
                    return future.result(timeout=WAIT_CHECK_SECONDS)
                except concurrent.futures.TimeoutError:
                    try:
                        throw_if_interrupted()
                    except Interrupted:
                        if future.cancel():
                            raise
        finally:
            watched = _watcher.get()
            if watched is not None and watched[0] is self:
                watched[1]()

    def _started(self) -> None:
        self._thread = threading.current_thread()

    @contextmanager
    def watching(self, on_run_over: Callable[[], None]) -> Iterator[None]:
        """Call `on_run_over` each time code in the block gets a run on this thread back (on the thread
        that handed it over)."""
        token = _watcher.set((self, on_run_over))
        try:
            yield
        finally:
            _watcher.reset(token)

    def close(self) -> None:
        """Take no more runs; one running ends on its own (its job was interrupted by the worker)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
