"""What the benchmark reads off the machine: peak memory, how busy the GPU was, and device sync.

Peak memory is torch's CUDA high-water mark of allocated bytes on a GPU; on the CPU it is the
process's peak resident set (VmHWM), which Linux lets a process reset by writing 5 to
/proc/self/clear_refs, so each phase reports its own peak rather than the process's lifetime one.

How busy the GPU is comes from NVML's utilisation counter (the share of each sampling period in which
a kernel was running), sampled on a thread through the window of interest; None where NVML or a GPU
is missing.
"""

from __future__ import annotations

import gc
import importlib
import resource
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import torch

PeakKind = Literal["cuda_max_allocated", "process_peak_rss"]
NVML_SAMPLE_SECONDS = 0.05


@dataclass(frozen=True)
class Peak:
    bytes: int
    kind: PeakKind


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    """Free what the last phase left (unreferenced modules, the allocator's cached blocks), so the next
    phase starts on an empty device and its peak is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    clear_refs = Path("/proc/self/clear_refs")
    if clear_refs.exists():
        clear_refs.write_text("5")


def read_peak(device: torch.device) -> Peak:
    if device.type == "cuda":
        return Peak(int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated")
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return Peak(int(line.split()[1]) * 1024, "process_peak_rss")
    return Peak(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process_peak_rss")


def _nvml() -> ModuleType | None:
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
    except Exception:  # not installed, or no driver: the figure is simply not available
        return None
    return nvml


class GpuBusySampler:
    """Mean NVML utilisation of one GPU over the `with` block, in percent (None without NVML)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml = _nvml() if device.type == "cuda" else None

    def __enter__(self) -> GpuBusySampler:
        if self._nvml is not None:
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            self._thread = threading.Thread(target=self._sample, args=(handle,), daemon=True)
            self._thread.start()
        return self

    def _sample(self, handle: object) -> None:
        assert self._nvml is not None
        while not self._stop.wait(NVML_SAMPLE_SECONDS):
            self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(handle).gpu))

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def percent(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None
