"""Job updates fanned out from the worker thread to listeners on the event loop (SSE, waiting requests).

Updates are a convenience for speed, never the source of truth: a listener that misses one still
sees the job's state in the store, so a lost event can delay an answer by a poll interval but can
never leave a request hanging.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

UpdateKind = Literal["status", "progress", "log", "preview"]
QUEUE_LIMIT = 256


@dataclass(frozen=True)
class JobUpdate:
    job_id: str
    kind: UpdateKind
    data: dict[str, Any]


class JobBroadcast:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._listeners: defaultdict[str, set[asyncio.Queue[JobUpdate]]] = defaultdict(set)

    def publish(self, update: JobUpdate) -> None:
        """Safe to call from any thread."""
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._deliver, update)

    def _deliver(self, update: JobUpdate) -> None:
        for queue in self._listeners.get(update.job_id, ()):
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
