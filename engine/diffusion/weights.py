"""Putting converted tensors into a library module without first filling it with random weights.

The module is constructed on the meta device (no memory, no initialisation: building a 12B-parameter
model the ordinary way costs minutes of random-number generation) and the file's tensors are then
assigned as its parameters, so loading costs what reading the file costs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import torch
from diffusers.hooks import apply_layerwise_casting
from diffusers.models.modeling_utils import ModelMixin

from engine.diffusion.fp8 import quantize_linears
from engine.diffusion.safetensors_file import WeightsFileError

Model = TypeVar("Model", bound=ModelMixin)


def count_blocks(names: Iterable[str], prefix: str) -> int:
    """How many numbered blocks `prefix{N}.` the names hold (one more than the highest N)."""
    numbers = {int(name[len(prefix) :].split(".", 1)[0]) for name in names if name.startswith(prefix)}
    return max(numbers) + 1 if numbers else 0


def split_rows(tensor: torch.Tensor, sizes: list[int]) -> tuple[torch.Tensor, ...]:
    """A fused projection's weight or bias cut into its parts along the output dimension."""
    if tensor.shape[0] != sum(sizes):
        raise ValueError(f"cannot split {tuple(tensor.shape)} into rows of {sizes}")
    return torch.split(tensor, sizes, dim=0)


def swap_halves(tensor: torch.Tensor) -> torch.Tensor:
    """(shift, scale) stacked along rows -> (scale, shift): original DiT final layers vs diffusers'."""
    first, second = tensor.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def instantiate(
    name: str,
    factory: Callable[[], Model],
    state_dict: Mapping[str, torch.Tensor],
    dtype: torch.dtype,
    storage_dtype: torch.dtype | None = None,
    fp8_matmul: bool = False,
    compute_device: torch.device | None = None,
) -> Model:
    """`factory()`'s module holding exactly `state_dict`, converted to `dtype` for computing.

    With a `storage_dtype` (fp8) the weights are kept in it and cast to `dtype` layer by layer as the
    model runs, as ComfyUI runs fp8 checkpoints: half the memory, the same arithmetic. As in ComfyUI,
    every linear and convolution is stored so (diffusers' default would keep the modulation layers
    wide); only the position embedding and parameters outside such layers (norm scales) are not.
    With `fp8_matmul` (weight_dtype fp8_e4m3fn_fast) the blocks' linear layers are instead made scaled
    fp8 layers (engine.diffusion.fp8) and the rest kept in `dtype`; whether fp8 arithmetic runs is
    decided for `compute_device` (by default where the tensors are).
    """
    with torch.device("meta"):
        module = factory()
    expected = set(module.state_dict())
    missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
    if missing or unexpected:
        raise WeightsFileError(
            f"{name}: the file's tensors do not fit the model its shapes describe "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''})"
        )
    converted = {key: tensor.to(dtype) for key, tensor in state_dict.items()}
    try:
        module.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as error:
        raise WeightsFileError(
            f"{name}: the file's tensors do not fit the model its shapes describe: {error}"
        ) from None
    if fp8_matmul:
        quantize_linears(module, compute_device)
    elif storage_dtype is not None and storage_dtype != dtype:
        apply_layerwise_casting(module, storage_dtype, dtype, skip_modules_pattern=("pos_embed",))
    return module
