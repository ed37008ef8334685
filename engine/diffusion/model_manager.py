"""Keeps loaded models on the compute device between runs, shared by every graph that names the same file.

Loading a 12B-parameter model takes far longer than sampling with it, so a model stays resident until
the memory budget needs its room: the least recently used model is dropped first (it is built again from
its file when next asked for). A model is identified by its file (path, modification time and size, so a
replaced file is loaded afresh), which model inside the file (an all-in-one checkpoint holds several) and
the options it was loaded with (weight dtype).

Running out of memory fails only the run that hit it: `out_of_memory_guard` turns torch's error into
`OutOfMemoryError` (which the executor reports like any node error) after unloading every model, as
ComfyUI does, so the next run starts from a clean device.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import torch

from engine.diffusion.safetensors_file import read_header
from engine.host_memory import available_memory_bytes, free_memory_bytes

Module = TypeVar("Module", bound=torch.nn.Module)

log = logging.getLogger(__name__)

CUDA_BUDGET_FRACTION = 0.85
"""Of the GPU's memory, what weights may take; the rest holds activations (GBs for a 1024² Flux step)."""

HOST_BUDGET_FRACTION = 0.5
"""Of the machine's RAM, what weights may take when computing on the CPU."""


class OutOfMemoryError(RuntimeError):
    """The device ran out of memory during one run; every model was unloaded, later runs are unaffected."""


@dataclass(frozen=True)
class ModelKey:
    path: str
    mtime_ns: int
    size: int
    part: str
    """Which model of the file: "diffusion_model", "vae", "text_encoders.t5xxl", ..."""
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def for_file(cls, path: str | Path, part: str, **options: str) -> ModelKey:
        stat = Path(path).stat()
        return cls(
            str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size, part, tuple(sorted(options.items()))
        )

    @property
    def name(self) -> str:
        return f"{Path(self.path).name} ({self.part})"


@dataclass(frozen=True)
class DeviceStats:
    """One compute device as ComfyUI's /system_stats lists it: memory in bytes, torch's share of it apart."""

    name: str
    type: str
    index: int | None
    vram_total: int
    vram_free: int
    """Free on the device, counting what torch has reserved but not in use (it can be reused at once)."""
    torch_vram_total: int
    """Reserved by torch's caching allocator."""
    torch_vram_free: int
    """Reserved by torch but not holding tensors."""


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU has it (the models' own precision; fp16 overflows in Flux), fp32 on the CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        _, total = torch.cuda.mem_get_info(device)
        return int(total * CUDA_BUDGET_FRACTION)
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * HOST_BUDGET_FRACTION)


def module_bytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error)
    return isinstance(error, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message
    )


@dataclass
class _Resident:
    module: torch.nn.Module
    nbytes: int


class ModelManager:
    """The models resident on one compute device, evicted least-recently-used beyond `budget_bytes`."""

    def __init__(
        self,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        budget_bytes: int | None = None,
    ) -> None:
        self.device = device or default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.budget_bytes = budget_bytes if budget_bytes is not None else default_budget(self.device)
        self._resident: OrderedDict[ModelKey, _Resident] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[ModelKey, threading.Lock] = {}
        self._load_listeners: list[Callable[[ModelKey, float], None]] = []

    def add_load_listener(self, listener: Callable[[ModelKey, float], None]) -> None:
        """Called with (key, seconds) after each model is built and moved to the device (for metrics)."""
        self._load_listeners.append(listener)

    def remove_load_listener(self, listener: Callable[[ModelKey, float], None]) -> None:
        self._load_listeners.remove(listener)

    def load(self, key: ModelKey, build: Callable[[], Module], size_hint: int | None = None) -> Module:
        """The module for `key` on the compute device, built by `build` the first time it is asked for.

        `size_hint` (bytes) lets room be made before building, for builders that load straight onto the
        device. Two threads asking for the same key at once build it once.
        """
        with self._lock:
            if (found := self._touch(key)) is not None:
                return cast(Module, found)  # a key's module is what that key's `build` built
            building = self._building.setdefault(key, threading.Lock())
        with building:
            try:
                return self._build(key, build, size_hint)
            finally:
                with self._lock:
                    self._building.pop(key, None)

    def _build(self, key: ModelKey, build: Callable[[], Module], size_hint: int | None) -> Module:
        with self._lock:
            if (found := self._touch(key)) is not None:
                return cast(Module, found)  # built meanwhile by another thread, with the same `build`
        if read_header(key.path).holds_random_test_weights:
            log.warning("%s holds random test weights: it makes noise, not a real model's output", key.name)
        started = time.perf_counter()
        with self.out_of_memory_guard(f"loading {key.name}"):
            if size_hint:
                self._make_room(size_hint)
            module = build()
            nbytes = module_bytes(module)
            self._make_room(nbytes)
            module = module.to(self.device).eval().requires_grad_(False)
        with self._lock:
            self._resident[key] = _Resident(module, nbytes)
        seconds = time.perf_counter() - started
        log.info("loaded %s (%.1f MB) on %s in %.2fs", key.name, nbytes / 2**20, self.device, seconds)
        for listener in self._load_listeners:
            listener(key, seconds)
        return module

    def _touch(self, key: ModelKey) -> torch.nn.Module | None:
        entry = self._resident.get(key)
        if entry is None:
            return None
        self._resident.move_to_end(key)
        return entry.module

    def _make_room(self, nbytes: int) -> None:
        with self._lock:
            evicted = []
            while self._resident and self.used_bytes + nbytes > self.budget_bytes:
                key, _ = self._resident.popitem(last=False)
                evicted.append(key)
        for key in evicted:
            log.info("unloaded %s to make room", key.name)
        if evicted:
            self._release_memory()

    @property
    def used_bytes(self) -> int:
        return sum(entry.nbytes for entry in self._resident.values())

    def resident(self) -> list[ModelKey]:
        """The resident models, least recently used first."""
        with self._lock:
            return list(self._resident)

    def memory_in_use(self) -> dict[str, float]:
        """Bytes held by resident weights and, on a GPU, allocated and reserved by torch."""
        memory = {"model_weights": float(self.used_bytes)}
        if self.device.type == "cuda":
            memory["cuda_allocated"] = float(torch.cuda.memory_allocated(self.device))
            memory["cuda_reserved"] = float(torch.cuda.memory_reserved(self.device))
        return memory

    @property
    def torch_version(self) -> str:
        return str(torch.__version__)

    def device_stats(self) -> DeviceStats:
        """The compute device's memory now; on the CPU that is the host memory, as ComfyUI reports it."""
        if self.device.type != "cuda":
            total, free = available_memory_bytes(), free_memory_bytes()
            return DeviceStats(
                str(self.device), self.device.type, self.device.index, total, free, total, free
            )
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(index)
        reserved = torch.cuda.memory_reserved(index)
        torch_free = max(0, reserved - torch.cuda.memory_allocated(index))
        name = f"cuda:{index} {torch.cuda.get_device_name(index)}"
        return DeviceStats(name, "cuda", index, total, free + torch_free, reserved, torch_free)

    def unload_all(self) -> None:
        with self._lock:
            self._resident.clear()
        self._release_memory()

    def _release_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @contextmanager
    def out_of_memory_guard(self, doing: str) -> Iterator[None]:
        """Turn running out of memory while `doing` into OutOfMemoryError, after freeing every model."""
        try:
            yield
        except Exception as error:
            if not is_out_of_memory(error):
                raise
            self.unload_all()
            raise OutOfMemoryError(
                f"out of memory on {self.device} while {doing}; every model was unloaded so the next run "
                "starts clean. A smaller image or batch needs less memory."
            ) from error
