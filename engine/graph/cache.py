"""Node outputs kept between runs, keyed by input signature, bounded in memory (least recently used out).

A node's signature covers its class, its `IS_CHANGED` answer, its constant inputs and, recursively,
the signatures of the nodes feeding it (plus its id for NOT_IDEMPOTENT nodes). Equal signatures mean
equal outputs, so a hit skips the node and everything upstream of it. The ui part (what an output
node shows) is cached with the outputs, so a cached output node still delivers its results to a new
run: resubmitting an identical graph returns the same images instead of nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from engine.graph.events import UiOutput

NodeOutputs = tuple[list[Any], ...]
"""One list per output slot: a node called over a list of inputs yields one value per call."""


def estimate_nbytes(value: Any) -> int:
    """Bytes held by a node output: tensors and arrays report `nbytes`; models are owned by the model
    manager, not the cache, so other objects count as small."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes
    if isinstance(value, str | bytes):
        return len(value) + 48
    if isinstance(value, list | tuple):
        return 56 + 8 * len(value) + sum(estimate_nbytes(item) for item in value)
    if isinstance(value, dict):
        return 64 + sum(estimate_nbytes(k) + estimate_nbytes(v) for k, v in value.items())
    return 64


@dataclass(frozen=True)
class CachedOutput:
    outputs: NodeOutputs
    ui: UiOutput | None
    nbytes: int


class OutputCache:
    def __init__(self, max_bytes: int = 4 * 1024**3, max_entries: int = 100_000) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[bytes, CachedOutput] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, signature: bytes) -> CachedOutput | None:
        with self._lock:
            entry = self._entries.get(signature)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(signature)
            self.hits += 1
            return entry

    def put(self, signature: bytes, outputs: NodeOutputs, ui: UiOutput | None) -> None:
        nbytes = estimate_nbytes(outputs) + (estimate_nbytes(ui) if ui else 0)
        if nbytes > self.max_bytes:
            return
        with self._lock:
            previous = self._entries.pop(signature, None)
            if previous is not None:
                self.nbytes -= previous.nbytes
            self._entries[signature] = CachedOutput(outputs, ui, nbytes)
            self.nbytes += nbytes
            while self.nbytes > self.max_bytes or len(self._entries) > self.max_entries:
                _, evicted = self._entries.popitem(last=False)
                self.nbytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.nbytes = 0
