"""Text-encoder outputs kept by (encoder, tokens), so a repeated prompt skips the encoder.

An endpoint's requests often share prompts (the same negative prompt every time, retries, variations
by seed), and encoding costs a T5-XXL pass (~30 ms on a GPU, seconds on a CPU). The executor's own cache
only helps when the same CLIP value meets the same text; this one is keyed by what decides the result:
- the encoder's identity: its file (path, modification time, size), which encoder inside it, the dtype
  it computes in (the model manager's key for it);
- the token windows, with their emphasis weights (so a different prompt, or the same words weighted
  differently, misses).
Encoders carrying LoRA patches are not cached: a patch's identity is an object, not a value, and a
stale hit would be a wrong image.

Entries are CPU tensors, evicted least recently used beyond a byte budget; a hit returns copies, so a
node that changes its conditioning in place cannot change the cached one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

import torch

TokenWeights = list[tuple[int, float]]
"""One window of (token, emphasis weight), as the text encoders' tokenization gives it."""
Encoded = tuple[torch.Tensor, torch.Tensor | None]
"""(states [1, tokens, width], pooled [1, width] or None), as TextEncoder.encode returns them."""


def _nbytes(encoded: Encoded) -> int:
    return sum(t.numel() * t.element_size() for t in encoded if t is not None)


def _copy(encoded: Encoded) -> Encoded:
    states, pooled = encoded
    return states.clone(), None if pooled is None else pooled.clone()


@dataclass(frozen=True)
class EmbeddingKey:
    encoder: Hashable
    windows: tuple[tuple[tuple[int, float], ...], ...]

    @classmethod
    def of(cls, encoder: Hashable, windows: list[TokenWeights]) -> EmbeddingKey:
        return cls(encoder, tuple(tuple((int(t), float(w)) for t, w in window) for window in windows))


class EmbeddingCache:
    """Least-recently-used encoder outputs within `capacity_bytes` (0 keeps none)."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self._entries: OrderedDict[EmbeddingKey, Encoded] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: EmbeddingKey) -> Encoded | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        return _copy(found)

    def put(self, key: EmbeddingKey, encoded: Encoded) -> None:
        size = _nbytes(encoded)
        if size > self.capacity_bytes:
            return
        stored = _copy(encoded)
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= _nbytes(previous)
            self._entries[key] = stored
            self._bytes += size
            while self._bytes > self.capacity_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= _nbytes(evicted)
