"""Server-sent events: a request's status, logs, step progress and previews, pushed as they happen."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from engine.api.context import service
from engine.api.errors import strict_dumps
from engine.jobs.types import Job

KEEPALIVE_SECONDS = 15.0


async def _send(response: web.StreamResponse, event: str | None, data: Any) -> None:
    name = f"event: {event}\n" if event else ""
    await response.write(f"{name}data: {strict_dumps(data)}\n\n".encode())


async def stream_job(
    request: web.Request,
    job: Job,
    render_status: Callable[[Job], Awaitable[dict[str, Any]]],
    *,
    status_only: bool = False,
    headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """Streams until the job finishes; first and last events are its status as the polling URL shows it.

    By default every update is an event named for its kind (status, log, progress, preview). With
    `status_only` (fal's status stream, whose clients read every event's data as a status body and
    keep the last one as the final status) each event is an unnamed status body: a log line sends the
    status again, for `render_status` to carry the new lines, and progress and previews are left out.
    """
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            **(headers or {}),
        }
    )
    await response.prepare(request)
    status_event = None if status_only else "status"
    engine = service(request)
    with engine.updates(job.id) as updates:
        current = await engine.job(job.id) or job
        await _send(response, status_event, await render_status(current))
        while not current.status.terminal:
            try:
                update = await asyncio.wait_for(updates.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                latest = await engine.job(job.id) or current
                if latest.status != current.status:  # an update was lost: the store still tells
                    await _send(response, status_event, await render_status(latest))
                current = latest
                continue
            if update.kind == "status" or (status_only and update.kind == "log"):
                current = await engine.job(job.id) or current
                await _send(response, status_event, await render_status(current))
            elif not status_only:
                await _send(response, update.kind, update.data)
    await response.write_eof()
    return response
