"""`weight_dtype fp8_e4m3fn_fast`: fp8 (e4m3) weights multiplied in fp8, with per-row scales.

Each linear layer of the transformer blocks keeps its weight as float8_e4m3fn, one float32 scale per
output row (the row's largest magnitude maps to e4m3's largest, 448). At run time the input is quantised
the same way, one scale per token row, and `torch._scaled_mm` multiplies the two in fp8 with float32
accumulation and both scales applied (Hopper's fp8 tensor cores: about twice bf16's rate). Where scaled
matmul is unavailable (an older GPU, a shape it refuses), the weight is dequantised and multiplied in
the compute dtype: the memory saving stays, the speed-up does not.

This is not lossless: each weight and activation keeps 3 mantissa bits. What it costs is measured by
tests/diffusion/test_fast_paths.py on the test models (relative error of one forward against the full-
precision one) and stated in the README.

Every linear layer of the transformer blocks is kept so (nearly all of the weights), but the AdaLN
modulations (one row per image a step: nothing to gain from fp8 arithmetic) dequantise their weight and
multiply in the compute dtype. The layers outside the blocks (embeddings, final layer: a few percent of
the weights) stay in the compute dtype: quantised, even with per-row scales, they doubled the error on
the test models, and the output is sensitive to them.
"""

from __future__ import annotations

import logging
from functools import cache

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max
SCALE_FLOOR = 1e-12
"""A zero row is given this scale rather than a division by zero."""

BLOCK_LISTS = ("transformer_blocks", "single_transformer_blocks", "joint_transformer_blocks")
"""The block lists of diffusers' Flux and AuraFlow transformers: where the matmul time is."""
WIDE_MATMUL = ("norm", "modulation")
"""Layers inside blocks multiplied in the compute dtype: AdaLN modulations (one row per image)."""


def quantize_rows(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 values, float32 scale per row [rows, 1]) with values ≈ fp8 * scale, row by row."""
    wide = values.float()
    scale = (wide.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=SCALE_FLOOR)
    return (wide / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


@cache
def scaled_mm_works(device: torch.device, out_dtype: torch.dtype) -> bool:
    """Whether row-wise scaled fp8 matmul runs on `device` (tried once with a small product)."""
    a, a_scale = quantize_rows(torch.randn(32, 32, device=device))
    b, b_scale = quantize_rows(torch.randn(32, 32, device=device))
    try:
        torch._scaled_mm(a, b.t(), scale_a=a_scale, scale_b=b_scale.t(), out_dtype=out_dtype)
    except (RuntimeError, NotImplementedError) as error:
        log.info("fp8 scaled matmul unavailable on %s (%s): weights are dequantised instead", device, error)
        return False
    return True


class Fp8Linear(torch.nn.Linear):
    """A linear layer with an fp8 weight and per-row scales (see the module docstring). It is an
    nn.Linear to whatever walks a model's layers, with the weight in fp8 as any fp8 model's."""

    weight_scale: torch.Tensor

    def __init__(
        self, linear: torch.nn.Linear, fp8_matmul: bool = True, device: torch.device | None = None
    ) -> None:
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight, scale = quantize_rows(linear.weight.detach())
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.register_buffer("weight_scale", scale)
        self.bias = linear.bias
        self.compute_dtype = linear.weight.dtype
        self.scaled = (
            fp8_matmul
            and self.in_features % 16 == 0
            and self.out_features % 16 == 0
            and self.compute_dtype in (torch.bfloat16, torch.float32)
            and scaled_mm_works(device or linear.weight.device, self.compute_dtype)
        )
        """Whether forwards use scaled matmul: decided once, for the compute `device` (by default the one
        the weight is on), outside any compiled region. Scaled matmul wants the
        weight's two widths in multiples of 16 (any number of rows)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        if self.scaled and rows.dtype == self.compute_dtype:
            x8, x_scale = quantize_rows(rows)
            out = torch._scaled_mm(
                x8,
                self.weight.t(),
                scale_a=x_scale,
                scale_b=self.weight_scale.t(),
                bias=None,
                out_dtype=x.dtype,
            )
            if self.bias is not None:
                out = out + self.bias.to(out.dtype)
        else:
            out = F.linear(rows, self.dequantized().to(x.dtype), self.bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def dequantized(self) -> torch.Tensor:
        return (self.weight.float() * self.weight_scale).to(self.compute_dtype)


def quantize_linears(module: torch.nn.Module, device: torch.device | None = None) -> int:
    """Replace the linear layers of `module`'s transformer blocks by Fp8Linear layers, multiplying in fp8
    all but the modulations on `device` (the compute device; by default where each weight is); returns
    how many multiply in fp8."""
    in_fp8 = 0
    for name, child in list(module.named_modules()):
        if not isinstance(child, torch.nn.Linear) or isinstance(child, Fp8Linear):
            continue
        if name.split(".", 1)[0] not in BLOCK_LISTS:
            continue
        parent_name, _, attribute = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        layer = Fp8Linear(child, not any(part in name for part in WIDE_MATMUL), device)
        setattr(parent, attribute, layer)
        in_fp8 += layer.scaled
    return in_fp8
