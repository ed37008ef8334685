"""The switches that trade memory, start-up time or exactness for speed, in one typed place.

Lossless ones are on by default where they pay (the GPU); those that change the numbers measurably
(step caching; fp8 matmuls, chosen per model with UNETLoader's weight_dtype) are off unless asked for.
This module imports no torch: the settings layer reads it, the model manager (engine.diffusion) acts on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

TextEncoderOffload = Literal["auto", "always", "never"]

MIB = 2**20
GIB = 2**30


@dataclass(frozen=True)
class PerformanceSettings:
    compile: bool | None = None
    """torch.compile the diffusion transformer: None decides by device (on with CUDA, off on the CPU, where
    compiling a forward takes longer than a test run spends in it)."""
    cuda_graphs: bool = True
    """Replay compiled graphs as CUDA graphs, for graphs whose shapes are all static (the first size a
    model serves; later sizes share one dynamic graph that runs without)."""
    recompile_limit: int = 8
    """Compiles of one model's forward at most; beyond it new shapes run eagerly instead of compiling."""
    batch_cfg: bool = True
    """Run the positive and negative prompt in one transformer batch when their shapes agree (ComfyUI's
    batching): the same arithmetic in one pass; off runs one forward per prompt (less activation memory)."""
    text_cache_bytes: int = 256 * MIB
    """Memory for text-encoder outputs kept by (encoder, tokens): a repeated prompt skips the encoder."""
    step_cache_threshold: float = 0.0
    """First-block step caching: when the first block's output changed by less than this (relative mean
    absolute difference) since the last fully computed step, the other blocks' cached residual is reused.
    0 turns it off; 0.05-0.15 is the useful range. Changes images visibly at the upper end."""
    offload_text_encoders: TextEncoderOffload = "auto"
    """Move a text encoder to host memory after it encodes: "auto" when the GPU is short of memory (less
    than `offload_reserve_bytes` free), "always", or "never". Has no effect when computing on the CPU."""
    offload_reserve_bytes: int = 8 * GIB
    """GPU memory a sampling run wants free for its activations (a 1024x1024 Flux step needs a few GB)."""
    sequential_offload: bool = False
    """Last resort for a model that does not fit: keep the diffusion transformer in host memory and move
    one block at a time to the GPU as it runs (several times slower)."""

    overlap_jobs: bool | None = None
    """Let the worker run the next job beside the one before it: while one job samples, the job before
    it decodes and saves its images and the next one encodes its prompt (engine.diffusion.sampling.turns).
    None decides by device: on with CUDA, whose device would otherwise wait between jobs for host work
    (PNG compression, file and store writes); off on the CPU, where both jobs would share the same cores."""

    def compiles(self, device_type: str) -> bool:
        return self.compile if self.compile is not None else device_type == "cuda"

    def overlaps(self, device_type: str) -> bool:
        return self.overlap_jobs if self.overlap_jobs is not None else device_type == "cuda"
