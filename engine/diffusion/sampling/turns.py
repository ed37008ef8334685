"""One device's diffusion model samples for one job at a time, while other jobs do the rest.

A worker that overlaps jobs runs two graphs at once on one device: while one job's sampler runs the
diffusion transformer, the job before it decodes its latent with the VAE and encodes and writes its
PNG, and the job after it encodes its prompt. Those stages are short beside sampling, and much of
them is host work (tokenising, PNG compression, file and store writes) that would otherwise leave the
device idle between jobs. Two samplers at once would only share the device, and their interleaved
steps would make both jobs late, so each sampling run takes the device's turn: first the sampler
nodes (KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced) wait for it, then they hold
it through their whole step loop.

The worker learns when a job's sampling is over (the moment to take the next job) by watching the
turns its graph's thread takes: `watching` registers a callback for the thread that runs the block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from engine.progress import throw_if_interrupted

WAIT_CHECK_SECONDS = 0.05
"""How often a sampler waiting for the turn looks whether its run was interrupted."""

_watcher: ContextVar[tuple[SamplingTurns, Callable[[], None]] | None] = ContextVar(
    "engine_sampling_turn_watcher", default=None
)


class SamplingTurns:
    """The turn to sample on one device (one per worker; the executor gives it to sampler nodes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the device's sampling turn for the block; while waiting for it, an interrupt of the run
        (engine.progress) stops the wait."""
        while not self._lock.acquire(timeout=WAIT_CHECK_SECONDS):
            throw_if_interrupted()
        try:
            yield
        finally:
            self._lock.release()
            watched = _watcher.get()
            if watched is not None and watched[0] is self:
                watched[1]()

    @contextmanager
    def watching(self, on_turn_over: Callable[[], None]) -> Iterator[None]:
        """Call `on_turn_over` each time code in the block ends a turn (on the thread that ends it)."""
        token = _watcher.set((self, on_turn_over))
        try:
            yield
        finally:
            _watcher.reset(token)
