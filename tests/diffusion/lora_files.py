"""Tiny LoRA files in the key formats trainers write, for layers of the tiny test models.

The layer shapes come from the test models' own layouts (engine.diffusion.flux/auraflow.layout,
the text encoders' file layouts), never from the LoRA mapping under test.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

Shape = tuple[int, ...]


def _random(shape: Shape, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=generator) / math.sqrt(shape[-1])


def lora_tensors(
    layers: Mapping[str, Shape],
    *,
    form: str = "kohya",
    rank: int = 4,
    alpha: float | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float16,
) -> dict[str, torch.Tensor]:
    """A change of each layer (base name -> its (out, in) weight shape) in one of the formats:

    kohya (`.lora_up.weight` / `.lora_down.weight`), peft (`.lora_B.weight` / `.lora_A.weight`),
    loha (`.hada_w1_a` ... `.hada_w2_b`), lokr (`.lokr_w1` whole [2, 2], `.lokr_w2_a` / `.lokr_w2_b`);
    each with `.alpha` when one is given.
    """
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for base, (out, inner) in layers.items():
        if form == "kohya":
            parts = {".lora_up.weight": (out, rank), ".lora_down.weight": (rank, inner)}
        elif form == "peft":
            parts = {".lora_B.weight": (out, rank), ".lora_A.weight": (rank, inner)}
        elif form == "loha":
            parts = {
                ".hada_w1_a": (out, rank),
                ".hada_w1_b": (rank, inner),
                ".hada_w2_a": (out, rank),
                ".hada_w2_b": (rank, inner),
            }
        elif form == "lokr":
            parts = {".lokr_w1": (2, 2), ".lokr_w2_a": (out // 2, rank), ".lokr_w2_b": (rank, inner // 2)}
        else:
            raise ValueError(form)
        for part, shape in parts.items():
            tensors[base + part] = _random(shape, generator).to(dtype)
        if alpha is not None:
            tensors[base + ".alpha"] = torch.tensor(alpha)
    return tensors


def xlabs_flux_tensors(
    hidden: int, double_blocks: int, single_blocks: int, rank: int = 4, seed: int = 0
) -> dict[str, torch.Tensor]:
    """XLabs' Flux LoRA layout: per double block qkv_lora1/2 (image/text qkv) and proj_lora1/2, per
    single block qkv_lora (the attention rows of linear1)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    modules = {
        f"double_blocks.{i}.processor.{name}": rows
        for i in range(double_blocks)
        for name, rows in (
            ("qkv_lora1", 3 * hidden),
            ("qkv_lora2", 3 * hidden),
            ("proj_lora1", hidden),
            ("proj_lora2", hidden),
        )
    }
    modules |= {f"single_blocks.{i}.processor.qkv_lora": 3 * hidden for i in range(single_blocks)}
    for module, rows in modules.items():
        tensors[f"{module}.down.weight"] = _random((rank, hidden), generator).to(torch.bfloat16)
        tensors[f"{module}.up.weight"] = _random((rows, rank), generator).to(torch.bfloat16)
    return tensors


def write_lora(directory: Path, name: str, tensors: Mapping[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    save_file(dict(tensors), path)
    return path
