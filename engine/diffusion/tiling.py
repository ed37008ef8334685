"""Running a function over overlapping tiles of [B, C, H, W] and blending the results, as ComfyUI's
tiled_scale does (for VAEDecodeTiled / VAEEncodeTiled: a VAE's memory grows with the image, a tile's
does not).

Tiles start every `tile - overlap` along each side (the last one shorter where the image ends); each
result is weighted by a ramp (t + 1) / f over the first and last f = round(overlap * scale) positions of
each side, and the weighted results are averaged. An input that fits in one tile is run whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Where the tiles along one side begin."""
    if size <= tile:
        return [0]
    if tile <= overlap:
        raise ValueError(
            f"tiles of {tile} overlapping by {overlap}: the overlap must be smaller than the tile (tiled VAE "
            "passes also use tiles half the tile_size, so keep overlap under half of it)"
        )
    return list(range(0, size - overlap, tile - overlap))


def _edge_weights(length: int, feather: int) -> torch.Tensor:
    """One side's blend weights: (t + 1) / feather over the first and last `feather` positions."""
    weights = torch.ones(length, dtype=torch.float64)
    if feather >= length:
        return weights
    ramp = torch.arange(1, feather + 1, dtype=torch.float64) / feather
    weights[:feather] *= ramp
    weights[length - feather :] *= ramp.flip(0)
    return weights


def tiled_apply(
    samples: torch.Tensor,
    function: Callable[[torch.Tensor], torch.Tensor],
    tile: tuple[int, int],
    overlap: int,
    scale: float,
    out_channels: int,
    on_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    """`function` (which maps [1, C, h, w] to [1, out_channels, h * scale, w * scale]) over `tile`
    (height, width) tiles of each sample, blended; float32 on the CPU. `on_tile` runs after each call."""
    batch, _, height, width = samples.shape
    out_height, out_width = round(height * scale), round(width * scale)
    output = torch.empty((batch, out_channels, out_height, out_width), dtype=torch.float32)
    feather = round(overlap * scale)
    for index in range(batch):
        sample = samples[index : index + 1]
        if height <= tile[0] and width <= tile[1]:
            output[index : index + 1] = function(sample).float().cpu()
            if on_tile is not None:
                on_tile()
            continue
        total = torch.zeros((1, out_channels, out_height, out_width), dtype=torch.float32)
        weight_sum = torch.zeros_like(total)
        rows, columns = tile_starts(height, tile[0], overlap), tile_starts(width, tile[1], overlap)
        for top, left in itertools.product(rows, columns):
            piece = sample[..., top : top + tile[0], left : left + tile[1]]
            result = function(piece).float().cpu()
            weights = (
                _edge_weights(result.shape[-2], feather)[:, None]
                * _edge_weights(result.shape[-1], feather)[None]
            ).float()
            out_top, out_left = round(top * scale), round(left * scale)
            region = (
                ...,
                slice(out_top, out_top + result.shape[-2]),
                slice(out_left, out_left + result.shape[-1]),
            )
            total[region] += result * weights
            weight_sum[region] += weights
            if on_tile is not None:
                on_tile()
        output[index : index + 1] = total / weight_sum
    return output


def tile_count(height: int, width: int, tile: tuple[int, int], overlap: int) -> int:
    """How many times `tiled_apply` calls the function for one sample."""
    if height <= tile[0] and width <= tile[1]:
        return 1
    return len(tile_starts(height, tile[0], overlap)) * len(tile_starts(width, tile[1], overlap))
