"""Latent scaling, batch, composite and transform nodes against closed-form answers."""

from __future__ import annotations

import pytest
import torch

from engine.nodes.latent_ops import (
    LatentBlend,
    LatentComposite,
    LatentCrop,
    LatentFlip,
    LatentFromBatch,
    LatentRotate,
    LatentUpscale,
    LatentUpscaleBy,
    RepeatLatentBatch,
    SetLatentNoiseMask,
)


def latent(batch: int = 1, height: int = 8, width: int = 12) -> dict[str, torch.Tensor]:
    return {"samples": torch.rand(batch, 4, height, width, generator=torch.Generator().manual_seed(batch))}


@pytest.mark.parametrize(
    ("width", "height", "cells"),
    [
        (0, 128, (16, 24)),  # width follows: round(12 * 128 / 8) = 192 pixels
        (100, 0, (8, 12)),  # height follows: round(8 * 100 / 12) = 67 pixels -> 8 cells; 100 // 8 = 12
        (16, 16, (8, 8)),  # each side at least 64 pixels
        (200, 300, (37, 25)),
    ],
)
def test_latent_upscale_sizes(width: int, height: int, cells: tuple[int, int]) -> None:
    (out,) = LatentUpscale().upscale(latent(), "nearest-exact", width, height, "disabled")
    assert tuple(out["samples"].shape[2:]) == cells


def test_latent_upscale_with_both_sides_zero_is_unchanged() -> None:
    samples = latent()
    assert LatentUpscale().upscale(samples, "bislerp", 0, 0, "center")[0] is samples


def test_latent_upscale_keeps_the_other_keys() -> None:
    samples = {**latent(), "noise_mask": torch.ones(1, 1, 64, 96), "batch_index": [2]}
    (out,) = LatentUpscale().upscale(samples, "bilinear", 128, 128, "center")
    assert out["samples"].shape == (1, 4, 16, 16)
    assert out["noise_mask"] is samples["noise_mask"] and out["batch_index"] == [2]


@pytest.mark.parametrize(("scale", "cells"), [(1.5, (12, 18)), (1.3, (10, 16)), (0.5, (4, 6))])
def test_latent_upscale_by_rounds_each_side(scale: float, cells: tuple[int, int]) -> None:
    for method in ("nearest-exact", "bilinear", "area", "bicubic", "bislerp"):
        (out,) = LatentUpscaleBy().upscale(latent(), method, scale)
        assert tuple(out["samples"].shape[2:]) == cells, method


def test_latent_from_batch_records_the_batch_positions() -> None:
    samples = latent(batch=4)
    (out,) = LatentFromBatch().frombatch(samples, 1, 2)
    assert torch.equal(out["samples"], samples["samples"][1:3])
    assert out["batch_index"] == [1, 2]
    (again,) = LatentFromBatch().frombatch(out, 1, 5)
    assert again["batch_index"] == [2]
    (past,) = LatentFromBatch().frombatch(samples, 60, 3)
    assert past["batch_index"] == [3]


def test_latent_from_batch_slices_a_noise_mask_batch_tiled_to_the_latents() -> None:
    masks = torch.arange(2, dtype=torch.float32).reshape(2, 1, 1, 1)
    (out,) = LatentFromBatch().frombatch({**latent(batch=4), "noise_mask": masks}, 2, 2)
    assert out["noise_mask"].flatten().tolist() == [0.0, 1.0]
    single = torch.ones(1, 1, 2, 2)
    (kept,) = LatentFromBatch().frombatch({**latent(batch=4), "noise_mask": single}, 3, 1)
    assert torch.equal(kept["noise_mask"], single)


@pytest.mark.parametrize(
    ("indices", "expected"), [([0, 1], [0, 1, 2, 3, 4, 5]), ([2, 5], [2, 5, 6, 9, 10, 13])]
)
def test_repeat_latent_batch_continues_the_batch_index(indices: list[int], expected: list[int]) -> None:
    samples = {**latent(batch=2), "batch_index": indices}
    (out,) = RepeatLatentBatch().repeat(samples, 3)
    assert out["samples"].shape[0] == 6
    assert torch.equal(out["samples"][4:], samples["samples"])
    assert out["batch_index"] == expected


def test_repeat_latent_batch_repeats_a_per_sample_noise_mask() -> None:
    masks = torch.arange(2, dtype=torch.float32).reshape(2, 1, 1, 1)
    (out,) = RepeatLatentBatch().repeat({**latent(batch=2), "noise_mask": masks}, 2)
    assert out["noise_mask"].flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    assert "batch_index" not in out


def test_latent_composite_pastes_at_whole_cells() -> None:
    target = {"samples": torch.zeros(1, 4, 8, 8)}
    (out,) = LatentComposite().composite(target, {"samples": torch.ones(1, 4, 3, 3)}, 8, 16)
    expected = torch.zeros(1, 4, 8, 8)
    expected[..., 2:5, 1:4] = 1.0
    assert torch.equal(out["samples"], expected)
    assert torch.equal(target["samples"], torch.zeros(1, 4, 8, 8))


def test_latent_composite_feathers_the_edges_inside_the_target() -> None:
    """Feather 16 pixels = 2 cells: each inner edge ramps 1/2, 1; an edge on the target's border does not."""
    target = {"samples": torch.zeros(1, 1, 8, 8)}
    (out,) = LatentComposite().composite(target, {"samples": torch.ones(1, 1, 4, 4)}, 8, 32, feather=16)
    rows = torch.tensor([0.5, 1.0, 1.0, 1.0])
    columns = torch.tensor([0.5, 1.0, 1.0, 0.5])
    expected = torch.zeros(8, 8)
    expected[4:8, 1:5] = rows[:, None] * columns[None, :]
    assert torch.equal(out["samples"][0, 0], expected)


def test_latent_composite_cuts_the_source_at_the_target_edge() -> None:
    (out,) = LatentComposite().composite(
        {"samples": torch.zeros(1, 1, 4, 4)}, {"samples": torch.ones(1, 1, 4, 4)}, 16, 16
    )
    assert out["samples"].sum() == 4


def test_set_latent_noise_mask_stores_it_as_b1hw() -> None:
    samples = latent()
    (out,) = SetLatentNoiseMask().set_mask(samples, torch.ones(64, 96))
    assert out["noise_mask"].shape == (1, 1, 64, 96)
    assert out["samples"] is samples["samples"] and "noise_mask" not in samples


def test_latent_crop_flip_rotate_and_blend() -> None:
    samples = {"samples": torch.arange(16 * 16, dtype=torch.float32).reshape(1, 1, 16, 16)}
    (cropped,) = LatentCrop().crop(samples, 64, 64, 8 * 12, 8)
    assert torch.equal(cropped["samples"], samples["samples"][..., 1:9, 8:16])
    (flipped,) = LatentFlip().flip(samples, "y-axis: horizontally")
    assert torch.equal(flipped["samples"], samples["samples"].flip(3))
    (rotated,) = LatentRotate().rotate(samples, "90 degrees")
    assert rotated["samples"][0, 0, 0, -1] == samples["samples"][0, 0, 0, 0]
    (blended,) = LatentBlend().blend(samples, {"samples": torch.zeros(1, 1, 16, 16)}, 0.25)
    assert torch.equal(blended["samples"], samples["samples"] * 0.25)
