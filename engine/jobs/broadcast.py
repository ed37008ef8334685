"""Job updates fanned out from the worker thread to listeners on the event loop (SSE, waiting requests,
ComfyUI's websocket), and cancellation requests handed to the worker that runs the job.

`JobBroadcast` is the embedded default: everything in one process. A fleet uses
`engine.jobs.redis_broadcast.RedisBroadcast`, the same interface over Redis pub/sub, so that an update
published by a worker process reaches listeners in every API process.

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
from collections.abc import Callable, Iterator
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


CancelHandler = Callable[[str], None]
"""Told the id of a job whose cancellation was asked for (the worker interrupts it if it runs it)."""
UpdateHandler = Callable[["JobUpdate"], None]


class JobBroadcast:
    """In-process: updates published on any thread reach this process's listeners on its loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._listeners: defaultdict[str, set[asyncio.Queue[JobUpdate]]] = defaultdict(set)
        self._all: set[asyncio.Queue[JobUpdate]] = set()
        self._cancel_handlers: list[CancelHandler] = []
        self._update_handlers: list[UpdateHandler] = []

    async def start(self) -> None:
        """Connect to whatever carries updates between processes (nothing here)."""

    async def close(self) -> None:
        """Stop carrying updates (nothing to stop here)."""

    def on_cancel(self, handler: CancelHandler) -> None:
        """Hear every cancellation request (a worker registers its own `cancel`)."""
        self._cancel_handlers.append(handler)

    def on_update(self, handler: UpdateHandler) -> None:
        """Hear every job's updates but the executor's events, on the event loop (the webhook sender
        wakes when any process finishes a job)."""
        self._update_handlers.append(handler)

    def request_cancel(self, job_id: str) -> None:
        """Ask whichever worker runs the job to interrupt it; called on the event loop."""
        self._cancelled(job_id)

    def _cancelled(self, job_id: str) -> None:
        for handler in self._cancel_handlers:
            handler(job_id)

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
        if update.kind != "event":
            for handler in self._update_handlers:
                handler(update)
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
        self._all_changed()
        try:
            yield queue
        finally:
            self._all.discard(queue)
            self._all_changed()

    def _all_changed(self) -> None:
        """Someone began or stopped listening to every job (a fleet subscribes to executor events then)."""
