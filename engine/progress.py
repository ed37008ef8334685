"""How a running node reports per-step progress and notices an interrupt.

A module of its own, below both the graph executor (which installs the context) and the nodes and
models (which report through it), so neither layer imports the other. Nodes know nothing of jobs or
HTTP: the executor installs a context around each node call, and code deep inside a node (a sampler
loop, a VAE tile loop) reports through it. The context travels with the call (a ContextVar), so
concurrent runs in different threads never see each other's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


class Interrupted(Exception):
    """The owner of the run asked it to stop; raised at the next check point."""


ProgressSink = Callable[[float, float, Any], None]
"""Receives (value, total, preview); preview is an optional RGB image (PIL) or None."""


@dataclass(frozen=True)
class NodeContext:
    node_id: str
    report: ProgressSink
    interrupt: threading.Event


_current: ContextVar[NodeContext | None] = ContextVar("engine_node_context", default=None)


@contextmanager
def node_context(node_id: str, report: ProgressSink, interrupt: threading.Event):
    token = _current.set(NodeContext(node_id, report, interrupt))
    try:
        yield
    finally:
        _current.reset(token)


def throw_if_interrupted() -> None:
    """Raise Interrupted if the current run was asked to stop (a no-op outside a run)."""
    context = _current.get()
    if context is not None and context.interrupt.is_set():
        raise Interrupted()


def report_progress(value: float, total: float, preview: Any = None) -> None:
    """Report that the current node has done `value` of `total` units of work."""
    context = _current.get()
    if context is not None:
        context.report(value, total, preview)


class ProgressBar:
    """Counts steps of one node's work, reporting each update (ComfyUI's `comfy.utils.ProgressBar`)."""

    def __init__(self, total: float) -> None:
        self.total = total
        self.current = 0.0

    def update_absolute(self, value: float, total: float | None = None, preview: Any = None) -> None:
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        report_progress(self.current, self.total, preview)

    def update(self, amount: float = 1, preview: Any = None) -> None:
        self.update_absolute(self.current + amount, preview=preview)
