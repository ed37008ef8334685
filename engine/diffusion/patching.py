"""Fitting a latent of any size to a transformer that cuts it into square patches."""

from __future__ import annotations

import torch


def pad_to_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Wrap-around padding of [..., H, W] up to multiples of `patch`, as ComfyUI pads odd latent sizes.

    The caller crops the prediction back to the original size.
    """
    pad_h, pad_w = -x.shape[-2] % patch, -x.shape[-1] % patch
    if not pad_h and not pad_w:
        return x
    return torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="circular")
