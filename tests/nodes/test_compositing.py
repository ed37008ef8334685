"""Pasting through masks and alpha in and out of images, against closed-form answers."""

from __future__ import annotations

import torch

from engine.nodes.compositing import (
    ImageCompositeMasked,
    JoinImageWithAlpha,
    LatentCompositeMasked,
    SplitImageWithAlpha,
)


def test_image_composite_pastes_the_source_at_x_y() -> None:
    (out,) = ImageCompositeMasked().composite(torch.zeros(1, 4, 4, 3), torch.ones(1, 2, 2, 3), 1, 2, False)
    expected = torch.zeros(1, 4, 4, 3)
    expected[:, 2:4, 1:3] = 1.0
    assert torch.equal(out, expected)


def test_image_composite_blends_by_the_mask_and_drops_what_falls_outside() -> None:
    destination = torch.zeros(2, 4, 4, 3)
    mask = torch.full((3, 3), 0.25)
    (out,) = ImageCompositeMasked().composite(destination, torch.ones(1, 3, 3, 3), 2, 2, False, mask)
    expected = torch.zeros(2, 4, 4, 3)
    expected[:, 2:, 2:] = 0.25
    assert torch.equal(out, expected)
    assert torch.equal(destination, torch.zeros(2, 4, 4, 3))


def test_image_composite_can_resize_the_source_to_the_destination() -> None:
    (out,) = ImageCompositeMasked().composite(torch.zeros(1, 4, 4, 3), torch.ones(1, 2, 2, 3), 0, 0, True)
    assert torch.equal(out, torch.ones(1, 4, 4, 3))


def test_image_composite_takes_the_destinations_channels() -> None:
    rgba_source = torch.ones(1, 2, 2, 4)
    (on_rgb,) = ImageCompositeMasked().composite(torch.zeros(1, 2, 2, 3), rgba_source, 0, 0, False)
    assert on_rgb.shape == (1, 2, 2, 3)
    rgba_destination = torch.zeros(1, 2, 2, 4)
    (on_rgba,) = ImageCompositeMasked().composite(rgba_destination, torch.ones(1, 1, 1, 3), 0, 0, False)
    assert on_rgba.shape == (1, 2, 2, 4)
    assert on_rgba[0, 0, 0, 3] == 1.0 and on_rgba[0, 1, 1, 3] == 0.0


def test_latent_composite_masked_moves_in_cells_of_eight_pixels() -> None:
    destination = {"samples": torch.zeros(1, 4, 4, 4), "batch_index": [3]}
    (out,) = LatentCompositeMasked().composite(destination, {"samples": torch.ones(1, 4, 2, 2)}, 8, 16, False)
    expected = torch.zeros(1, 4, 4, 4)
    expected[..., 2:4, 1:3] = 1.0
    assert torch.equal(out["samples"], expected)
    assert out["batch_index"] == [3]


def test_join_image_with_alpha_makes_alpha_one_minus_the_mask() -> None:
    image = torch.rand(2, 2, 2, 3)
    (out,) = JoinImageWithAlpha().join_image_with_alpha(image, torch.full((1, 4, 4), 0.25))
    assert out.shape == (1, 2, 2, 4)
    assert torch.equal(out[..., :3], image[:1])
    assert torch.equal(out[..., 3], torch.full((1, 2, 2), 0.75))


def test_split_image_with_alpha_undoes_join() -> None:
    image, mask = torch.rand(1, 3, 3, 3), torch.rand(1, 3, 3)
    (joined,) = JoinImageWithAlpha().join_image_with_alpha(image, mask)
    rgb, split_mask = SplitImageWithAlpha().split_image_with_alpha(joined)
    assert torch.equal(rgb, image)
    torch.testing.assert_close(split_mask, mask)


def test_split_image_without_alpha_masks_nothing() -> None:
    rgb, mask = SplitImageWithAlpha().split_image_with_alpha(torch.rand(2, 3, 3, 3))
    assert rgb.shape == (2, 3, 3, 3)
    assert torch.equal(mask, torch.zeros(2, 3, 3))
