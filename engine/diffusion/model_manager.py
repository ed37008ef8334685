"""Keeps loaded models on the compute device between runs, shared by every graph that names the same file.

Loading a 12B-parameter model takes far longer than sampling with it, so a model stays resident until
the memory budget needs its room: the least recently used model is dropped first (it is built again from
its file when next asked for). A model is identified by its file (path, modification time and size, so a
replaced file is loaded afresh), which model inside the file (an all-in-one checkpoint holds several) and
the options it was loaded with (weight dtype).

When the GPU is short of memory, a text encoder that has done its work is moved to host memory (not
dropped: moving it back is far quicker than reading its file) and counted off the budget; the
diffusion transformer's blocks can, as a last resort, be kept in host memory and moved to the GPU one
at a time as they run (PerformanceSettings.sequential_offload).

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
from functools import partial
from pathlib import Path
from typing import TypeVar, cast

import torch

from engine.diffusion.acceleration import Accelerator
from engine.diffusion.embedding_cache import EmbeddingCache
from engine.diffusion.safetensors_file import read_header
from engine.host_memory import available_memory_bytes, free_memory_bytes
from engine.performance import PerformanceSettings

Module = TypeVar("Module", bound=torch.nn.Module)

log = logging.getLogger(__name__)

CUDA_BUDGET_FRACTION = 0.85
"""Of the GPU's memory, what weights may take; the rest holds activations (GBs for a 1024² Flux step)."""

HOST_BUDGET_FRACTION = 0.5
"""Of the machine's RAM, what weights may take when computing on the CPU."""

HOST = torch.device("cpu")


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


BLOCK_LISTS = ("transformer_blocks", "joint_transformer_blocks", "single_transformer_blocks")
"""Where diffusers' diffusion transformers keep their blocks (Flux, AuraFlow): what streaming moves."""


def _block_lists(module: torch.nn.Module) -> list[torch.nn.ModuleList]:
    return [
        blocks
        for name in BLOCK_LISTS
        if isinstance(blocks := getattr(module, name, None), torch.nn.ModuleList)
    ]


def _move_block(block: torch.nn.Module, *_: object, device: torch.device) -> None:
    """A streaming hook: the block's weights to `device` (before it runs: the compute device; after: host)."""
    block.to(device)


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
    offloaded: bool = False
    """Moved to host memory (text encoders after encoding, when memory is short); not counted on the
    device, moved back when next asked for."""


class ModelManager:
    """The models resident on one compute device, evicted least-recently-used beyond `budget_bytes`."""

    def __init__(
        self,
        device: torch.device | None = None,
        dtype: torch.dtype | None = None,
        budget_bytes: int | None = None,
        performance: PerformanceSettings | None = None,
    ) -> None:
        self.device = device or default_device()
        self.dtype = dtype or default_dtype(self.device)
        self.budget_bytes = budget_bytes if budget_bytes is not None else default_budget(self.device)
        self.performance = performance or PerformanceSettings()
        self.accelerator = Accelerator(self.device, self.dtype, self.performance)
        self.embedding_cache = EmbeddingCache(self.performance.text_cache_bytes)
        self._resident: OrderedDict[ModelKey, _Resident] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[ModelKey, threading.Lock] = {}
        self._load_listeners: list[Callable[[ModelKey, float], None]] = []

    def add_load_listener(self, listener: Callable[[ModelKey, float], None]) -> None:
        """Called with (key, seconds) after each model is built and moved to the device (for metrics)."""
        self._load_listeners.append(listener)

    def remove_load_listener(self, listener: Callable[[ModelKey, float], None]) -> None:
        self._load_listeners.remove(listener)

    def load(
        self,
        key: ModelKey,
        build: Callable[[], Module],
        size_hint: int | None = None,
        streamable: bool = False,
    ) -> Module:
        """The module for `key` on the compute device, built by `build` the first time it is asked for.

        `size_hint` (bytes) lets room be made before building, for builders that load straight onto the
        device. Two threads asking for the same key at once build it once. A `streamable` module's blocks
        (a diffusion transformer's) are kept in host memory and streamed when sequential offload is on.
        """
        with self._lock:
            if (found := self._touch(key)) is not None:
                return cast(Module, found)  # a key's module is what that key's `build` built
            building = self._building.setdefault(key, threading.Lock())
        with building:
            try:
                return self._build(key, build, size_hint, streamable)
            finally:
                with self._lock:
                    self._building.pop(key, None)

    def _build(
        self, key: ModelKey, build: Callable[[], Module], size_hint: int | None, streamable: bool
    ) -> Module:
        with self._lock:
            if (found := self._touch(key)) is not None:
                return cast(Module, found)  # built meanwhile by another thread, with the same `build`
            offloaded = self._resident.get(key)
        if offloaded is not None:
            return cast(Module, self._bring_back(key, offloaded))
        if read_header(key.path).holds_random_test_weights:
            log.warning("%s holds random test weights: it makes noise, not a real model's output", key.name)
        started = time.perf_counter()
        streamed = streamable and self.performance.sequential_offload
        with self.out_of_memory_guard(f"loading {key.name}"):
            if size_hint and not streamed:
                self._make_room(size_hint)
            module = build()
            nbytes = module_bytes(module)
            if streamed:
                module = self._stream(module)
                nbytes -= sum(module_bytes(blocks) for blocks in _block_lists(module))
            else:
                self._make_room(nbytes)
                module = module.to(self.device)
            module = module.eval().requires_grad_(False)
        with self._lock:
            self._resident[key] = _Resident(module, nbytes)
        seconds = time.perf_counter() - started
        log.info("loaded %s (%.1f MB) on %s in %.2fs", key.name, nbytes / 2**20, self.device, seconds)
        for listener in self._load_listeners:
            listener(key, seconds)
        return module

    def _touch(self, key: ModelKey) -> torch.nn.Module | None:
        entry = self._resident.get(key)
        if entry is None or entry.offloaded:
            return None
        self._resident.move_to_end(key)
        return entry.module

    def _bring_back(self, key: ModelKey, entry: _Resident) -> torch.nn.Module:
        """An offloaded module moved back to the compute device (room made for it first)."""
        with self.out_of_memory_guard(f"moving {key.name} back"):
            self._make_room(entry.nbytes)
            entry.module.to(self.device)
        with self._lock:
            entry.offloaded = False
            self._resident[key] = entry
            self._resident.move_to_end(key)
        log.info("moved %s back to %s", key.name, self.device)
        return entry.module

    def _stream(self, module: Module) -> Module:
        """The module's blocks kept in host memory, each moved to the device just before it runs and back
        after; the rest (embeddings, final layers: a few percent of the weights) stays on the device."""
        lists = {
            name: found
            for name in BLOCK_LISTS
            if isinstance(found := module._modules.get(name), torch.nn.ModuleList)
        }
        for name in lists:  # set aside while the rest moves, so they never have to fit on the device
            module._modules[name] = torch.nn.ModuleList()
        module.to(self.device)
        module._modules.update(lists)
        blocks = [block for block_list in lists.values() for block in block_list]
        for block in blocks:
            block.to(HOST)
            block.register_forward_pre_hook(partial(_move_block, device=self.device))
            block.register_forward_hook(partial(_move_block, device=HOST))
        log.info("streaming %s from host memory, %d blocks one at a time", type(module).__name__, len(blocks))
        return module

    def release_text_encoder(self, key: ModelKey) -> None:
        """A text encoder has encoded: move it to host memory if the policy says so (always, or "auto"
        while the GPU has less free than a sampling run wants); the next encode moves it back."""
        policy = self.performance.offload_text_encoders
        if self.device.type != "cuda" or policy == "never":
            return
        if policy == "auto" and self.device_free_bytes() >= self.performance.offload_reserve_bytes:
            return
        self.offload(key)

    def offload(self, key: ModelKey) -> bool:
        """Move a resident module to host memory, off the device budget; False if it is not resident."""
        with self._lock:
            entry = self._resident.get(key)
            if entry is None or entry.offloaded:
                return False
            entry.offloaded = True
        entry.module.to(HOST)
        self._release_memory()
        log.info("moved %s to host memory", key.name)
        return True

    def offloaded(self) -> list[ModelKey]:
        with self._lock:
            return [key for key, entry in self._resident.items() if entry.offloaded]

    def device_free_bytes(self) -> int:
        """Free memory on the compute device, counting what torch holds unused (it can be reused)."""
        return self.device_stats().vram_free

    def _make_room(self, nbytes: int) -> None:
        with self._lock:
            evicted = []
            on_device = [key for key, entry in self._resident.items() if not entry.offloaded]
            while on_device and self.used_bytes + nbytes > self.budget_bytes:
                key = on_device.pop(0)
                del self._resident[key]
                evicted.append(key)
        for key in evicted:
            log.info("unloaded %s to make room", key.name)
        if evicted:
            self._release_memory()

    @property
    def used_bytes(self) -> int:
        return sum(entry.nbytes for entry in self._resident.values() if not entry.offloaded)

    def resident(self) -> list[ModelKey]:
        """The models on the compute device, least recently used first."""
        with self._lock:
            return [key for key, entry in self._resident.items() if not entry.offloaded]

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
