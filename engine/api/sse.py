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


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    await response.write(f"event: {event}\ndata: {strict_dumps(data)}\n\n".encode())


async def stream_job(
    request: web.Request, job: Job, render_status: Callable[[Job], Awaitable[dict[str, Any]]]
) -> web.StreamResponse:
    """Streams until the job finishes; first and last events are its status as the polling URL shows it."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    engine = service(request)
    with engine.updates(job.id) as updates:
        current = await engine.job(job.id) or job
        await _send(response, "status", await render_status(current))
        while not current.status.terminal:
            try:
                update = await asyncio.wait_for(updates.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                current = await engine.job(job.id) or current
                continue
            if update.kind == "status":
                current = await engine.job(job.id) or current
                await _send(response, "status", await render_status(current))
            else:
                await _send(response, update.kind, update.data)
    await response.write_eof()
    return response
