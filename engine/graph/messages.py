"""ComfyUI's names and shapes for the executor's events: the messages its websocket sends and the status
messages its history keeps (COMFY.md §3 and §10).

They live beside the events so that the worker, which records a run's status messages for the history,
and the API, which sends them live, name and shape them the same way. Nothing here knows HTTP.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any, assert_never

from engine.graph.events import (
    Event,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionStarted,
    ExecutionSucceeded,
    NodeFinished,
    NodeProgress,
    NodesCached,
    NodeStarted,
)

Message = tuple[str, dict[str, Any]]
"""(type, data), as ComfyUI sends `{"type": type, "data": data}` and keeps `[type, data]` in its history."""

STATUS_MESSAGES = frozenset(
    {"execution_start", "execution_cached", "execution_success", "execution_error", "execution_interrupted"}
)
"""The messages ComfyUI keeps in a prompt's history (`status.messages`); the others are only sent live."""


def timestamp_ms() -> int:
    """ComfyUI's message timestamps: milliseconds since the epoch."""
    return int(time.time() * 1000)


def json_safe(value: Any) -> Any:
    """A node's UI output as plain JSON: tuples become lists, a non-finite number None, and anything else
    JSON cannot hold its text, so that one odd value from a custom node can neither stop its job from
    being stored nor break the message that reports it."""
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def message(event: Event, timestamp: int) -> Message | None:
    """The ComfyUI message for an executor event, or None for a node that finished without a UI output
    (ComfyUI sends `executed` only for those that have one)."""
    if isinstance(event, ExecutionStarted):
        return "execution_start", {"prompt_id": event.prompt_id, "timestamp": timestamp}
    if isinstance(event, NodesCached):
        return "execution_cached", {
            "nodes": list(event.nodes),
            "prompt_id": event.prompt_id,
            "timestamp": timestamp,
        }
    if isinstance(event, NodeStarted):
        return "executing", {
            "node": event.node_id,
            "display_node": event.display_node,
            "prompt_id": event.prompt_id,
        }
    if isinstance(event, NodeProgress):
        return "progress", {
            "value": json_safe(event.value),
            "max": json_safe(event.total),
            "prompt_id": event.prompt_id,
            "node": event.node_id,
        }
    if isinstance(event, NodeFinished):
        if event.output is None:
            return None
        return "executed", {
            "node": event.node_id,
            "display_node": event.display_node,
            "output": json_safe(event.output),
            "prompt_id": event.prompt_id,
        }
    if isinstance(event, ExecutionSucceeded):
        return "execution_success", {"prompt_id": event.prompt_id, "timestamp": timestamp}
    if isinstance(event, ExecutionFailed):
        return "execution_error", {
            **_where_it_stopped(event),
            "exception_message": event.exception_message,
            "exception_type": event.exception_type,
            "traceback": list(event.traceback),
            "current_inputs": json_safe(event.current_inputs),
            "current_outputs": list(event.current_outputs),
            "timestamp": timestamp,
        }
    if isinstance(event, ExecutionInterrupted):
        return "execution_interrupted", {**_where_it_stopped(event), "timestamp": timestamp}
    assert_never(event)


def _where_it_stopped(event: ExecutionFailed | ExecutionInterrupted) -> dict[str, Any]:
    """What ComfyUI's execution_error and execution_interrupted both begin with: the prompt, the node the
    run stopped at and the nodes that had run."""
    return {
        "prompt_id": event.prompt_id,
        "node_id": event.node_id,
        "node_type": event.node_type,
        "executed": list(event.executed),
    }
