"""How a diffusion transformer's forward is run fast without changing what it computes.

- Attention: diffusers' processors call torch's scaled_dot_product_attention; which kernel serves it is
  chosen once per device here. On CUDA the fused kernels go first (cuDNN, then flash, then memory-
  efficient; each kept only if a probe call succeeds on this GPU, math last as the fallback); on the CPU
  torch's CPU flash kernel, then math (the order torch itself takes there, so CPU results are the ones
  an unconfigured torch gives). All are exact attention: they differ in rounding, not in what is computed.
- torch.compile: one compiled wrapper per resident module. The first shapes a model meets compile to a
  static graph, replayed as a CUDA graph when allowed; dynamo then marks the dimensions that changed as
  dynamic (automatic dynamic shapes), so every later size shares one graph rather than compiling anew,
  and CUDA graphs are skipped for dynamic graphs (their buffers would be re-recorded per size). The
  recompile limit bounds what is left (batch sizes, text lengths); past it, dynamo runs the new shapes
  eagerly instead of compiling again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from engine.performance import PerformanceSettings

log = logging.getLogger(__name__)

CUDA_BACKENDS = (SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION)
"""Fastest first on Hopper (cuDNN's fused attention), then FlashAttention-2, then xformers-style."""

CPU_BACKENDS = (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH)
"""torch's CPU flash kernel serves what it can (no masks, no dropout), math the rest."""

COMPILED_ATTRIBUTE = "_engine_compiled_forward"

PROBE_SHAPE = (1, 2, 128, 128)
"""[batch, heads, tokens, head width] of the probe: Flux's and AuraFlow's heads are 128 and 256 wide."""


def choose_attention_backends(device: torch.device, dtype: torch.dtype) -> tuple[SDPBackend, ...]:
    """The SDPA kernels to allow on `device`, best first: the fused ones that run here, then math."""
    if device.type != "cuda":
        return CPU_BACKENDS
    usable = []
    for backend in CUDA_BACKENDS:
        q = torch.randn(PROBE_SHAPE, device=device, dtype=dtype)
        try:
            with sdpa_kernel([backend]):
                F.scaled_dot_product_attention(q, q, q)
        except RuntimeError as error:
            log.info("attention backend %s unavailable on %s: %s", backend.name, device, error)
            continue
        usable.append(backend)
    return (*usable, SDPBackend.MATH)


class Accelerator:
    """The fast path of one device's forwards: the attention kernels (chosen at construction) and the
    compiled wrappers of resident modules."""

    def __init__(self, device: torch.device, dtype: torch.dtype, settings: PerformanceSettings) -> None:
        self.device = device
        self.settings = settings
        self.attention_backends = choose_attention_backends(device, dtype)
        self.compiles = settings.compiles(device.type)
        self.cuda_graphs = self.compiles and settings.cuda_graphs and device.type == "cuda"
        log.info(
            "attention on %s: %s; torch.compile %s",
            device,
            ", ".join(backend.name for backend in self.attention_backends),
            "on" + (" with CUDA graphs" if self.cuda_graphs else "") if self.compiles else "off",
        )

    @contextmanager
    def attention(self) -> Iterator[None]:
        """SDPA calls inside use the chosen kernels, in order of preference."""
        with sdpa_kernel(list(self.attention_backends), set_priority=True):
            yield

    def forward_of(self, module: torch.nn.Module, compiled: bool = True) -> torch.nn.Module:
        """What to call for `module`'s forward: its compiled wrapper when compiling is on, else the module
        itself. The wrapper is made once and kept on the module's own __dict__ (not as a submodule), so
        it goes with the module when the model manager drops it."""
        if not (compiled and self.compiles):
            return module
        wrapper = module.__dict__.get(COMPILED_ATTRIBUTE)
        if wrapper is None:
            options: dict[str, str | int | bool | Callable[..., Any]] = {
                "triton.cudagraphs": self.cuda_graphs,
                "triton.cudagraph_skip_dynamic_graphs": True,
            }
            wrapper = torch.compile(module, options=options)
            module.__dict__[COMPILED_ATTRIBUTE] = wrapper
        # torch.compile of a module gives an OptimizedModule, which is called and read like the module
        return cast(torch.nn.Module, wrapper)

    @contextmanager
    def running(self) -> Iterator[None]:
        """Around one forward: the attention kernels and, when compiling, the recompile bound and (with
        CUDA graphs) the start of a new graph step, so that replaying does not overwrite outputs still
        in use."""
        with self.attention():
            if not self.compiles:
                yield
                return
            with torch._dynamo.config.patch(recompile_limit=self.settings.recompile_limit):
                if self.cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                yield
