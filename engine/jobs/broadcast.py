"""Job updates fanned out from the worker thread to listeners on the event loop (SSE, waiting requests,
ComfyUI's websocket).

Updates are a convenience for speed, never the source of truth: a listener that misses one still
sees the job's state in the store, so a lost event can delay an answer by a poll interval but can
never leave a request hanging.

A listener of one job hears its summarised updates (status, progress, log, preview, and for a graph
job each output recorded as an asset). A listener of
every job (the ComfyUI websocket, which reports each node as ComfyUI does) also hears the executor's
own events, kind "event", each as it happened.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from engine.graph.events import Event

UpdateKind = Literal["status", "progress", "log", "preview", "event", "output"]
QUEUE_LIMIT = 256
ALL_JOBS_QUEUE_LIMIT = 4096
"""A listener of every job hears each node and sampler step of every run: it needs more room."""


@dataclass(frozen=True)
class JobUpdate:
    job_id: str
    kind: UpdateKind
    data: dict[str, Any]
    event: Event | None = None
    """For kind "event": the executor's event (`data` holds its "timestamp", ms, as the history has it)."""
    preview_jpeg: bytes | None = None
    """For an "event" of sampler progress with a preview: the preview as JPEG bytes."""


class JobBroadcast:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._listeners: defaultdict[str, set[asyncio.Queue[JobUpdate]]] = defaultdict(set)
        self._all: set[asyncio.Queue[JobUpdate]] = set()

    @property
    def listening_to_all(self) -> bool:
        """Whether anyone hears every job's executor events (worth encoding a preview for each step)."""
        return bool(self._all)

    def publish(self, update: JobUpdate) -> None:
        """Safe to call from any thread."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._deliver, update)

    def _deliver(self, update: JobUpdate) -> None:
        job_listeners = self._listeners.get(update.job_id, ()) if update.kind != "event" else ()
        for queue in (*job_listeners, *self._all):
            if queue.full():  # a slow listener loses the oldest updates, not the newest
                queue.get_nowait()
            queue.put_nowait(update)

    @contextmanager
    def listen(self, job_id: str) -> Iterator[asyncio.Queue[JobUpdate]]:
        queue: asyncio.Queue[JobUpdate] = asyncio.Queue(QUEUE_LIMIT)
        self._listeners[job_id].add(queue)
        try:
            yield queue
        finally:
            listeners = self._listeners.get(job_id)
            if listeners is not None:
                listeners.discard(queue)
                if not listeners:
                    del self._listeners[job_id]

    @contextmanager
    def listen_all(self) -> Iterator[asyncio.Queue[JobUpdate]]:
        """Every update of every job, executor events included, while the block runs."""
        queue: asyncio.Queue[JobUpdate] = asyncio.Queue(ALL_JOBS_QUEUE_LIMIT)
        self._all.add(queue)
        try:
            yield queue
        finally:
            self._all.discard(queue)
