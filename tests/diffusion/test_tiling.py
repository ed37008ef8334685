"""Tiled evaluation (ComfyUI's tiled_scale): where tiles start, how overlaps blend, and that a function
without reach across pixels gives the same answer tiled as whole."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from engine.diffusion.tiling import tile_count, tile_starts, tiled_apply


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "starts"),
    [(12, 8, 4, [0, 4]), (20, 8, 2, [0, 6, 12]), (8, 8, 2, [0]), (5, 8, 7, [0]), (64, 32, 0, [0, 32])],
)
def test_tile_starts(size: int, tile: int, overlap: int, starts: list[int]) -> None:
    assert tile_starts(size, tile, overlap) == starts


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"), [(20, 12, (8, 8), 2), (100, 37, (16, 32), 8)]
)
def test_tile_count_is_comfyuis_step_count(
    height: int, width: int, tile: tuple[int, int], overlap: int
) -> None:
    """ComfyUI's get_tiled_scale_steps: ceil((size - overlap) / (tile - overlap)) per side, 1 if it fits."""
    rows = 1 if height <= tile[0] else math.ceil((height - overlap) / (tile[0] - overlap))
    columns = 1 if width <= tile[1] else math.ceil((width - overlap) / (tile[1] - overlap))
    assert tile_count(height, width, tile, overlap) == rows * columns


def test_overlapping_tiles_blend_by_their_edge_ramps() -> None:
    """Two 8-wide tiles over 12 columns, overlapping by 4: tile weights ramp 1/4..1 at each end, so across
    the overlap the second tile's share is 0.25/1.25, 0.5/1.25, 0.75/1.25, 1/1.25."""
    calls: list[torch.Tensor] = []

    def tile_number(piece: torch.Tensor) -> torch.Tensor:
        calls.append(piece)
        return torch.full_like(piece, float(len(calls) - 1))

    out = tiled_apply(torch.zeros(1, 1, 1, 12), tile_number, (1, 8), 4, 1.0, 1)
    expected = torch.tensor([0, 0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1, 1, 1, 1])
    torch.testing.assert_close(out[0, 0, 0], expected)
    assert [tuple(piece.shape[-2:]) for piece in calls] == [(1, 8), (1, 8)]


def test_a_pixelwise_function_gives_the_same_result_tiled() -> None:
    """Nearest x8 upscaling of 2x: each output pixel depends on one input pixel; blending changes nothing."""
    samples = torch.rand(2, 3, 21, 13, generator=torch.Generator().manual_seed(0))

    def upscale(piece: torch.Tensor) -> torch.Tensor:
        return F.interpolate(piece * 2, scale_factor=8, mode="nearest")

    out = tiled_apply(samples, upscale, (8, 4), 2, 8.0, 3)
    torch.testing.assert_close(out, upscale(samples))


def test_downscaling_tiles_land_at_scaled_positions() -> None:
    samples = torch.rand(1, 3, 48, 64, generator=torch.Generator().manual_seed(1))

    def pool(piece: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(piece, 8)

    out = tiled_apply(samples, pool, (16, 32), 8, 1 / 8, 3)
    torch.testing.assert_close(out, pool(samples))


def test_an_input_that_fits_one_tile_is_run_whole() -> None:
    calls = []
    samples = torch.rand(2, 1, 8, 8)
    out = tiled_apply(samples, lambda piece: calls.append(piece.shape) or piece, (8, 8), 100, 1.0, 1)
    assert torch.equal(out, samples) and calls == [(1, 1, 8, 8)] * 2


def test_an_overlap_as_large_as_the_tile_is_refused() -> None:
    with pytest.raises(ValueError, match="overlap must be smaller than the tile"):
        tiled_apply(torch.zeros(1, 1, 20, 20), lambda piece: piece, (8, 8), 8, 1.0, 1)
