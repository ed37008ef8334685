"""Stopping background tasks for certain.

A task cancelled while inside a Redis call can lose the cancellation: redis-py's asyncio client may
catch it while it tidies its connection and carry on, and the task then waits forever at its next
`await`, holding up shutdown. So a task still running after a cancellation is cancelled again (a
task waiting on a plain future always takes it) until every one has ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

ROUND_SECONDS = 1.0
ROUNDS = 10


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    pending = [task for task in tasks if not task.done()]
    for _ in range(ROUNDS):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, still = await asyncio.wait(pending, timeout=ROUND_SECONDS)
        pending = list(still)
    for task in pending:
        log.warning("task %s did not stop when cancelled", task.get_name())
