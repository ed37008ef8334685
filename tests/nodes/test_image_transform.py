"""Image scaling, cropping, stitching, padding and batch nodes against closed-form answers (sizes, crop
offsets as ComfyUI rounds them, the outpainting mask's values) and Pillow's own Lanczos filter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from engine.nodes.image_batch import ImageBatch, ImageFromBatch, RepeatImageBatch
from engine.nodes.image_transform import (
    GetImageSize,
    ImageCrop,
    ImageFlip,
    ImageInvert,
    ImagePadForOutpaint,
    ImageRotate,
    ImageScale,
    ImageScaleBy,
    ImageScaleToMaxDimension,
    ImageScaleToTotalPixels,
    ImageStitch,
)
from engine.nodes.resize import bislerp


def columns_image(height: int, width: int) -> torch.Tensor:
    """[1, H, W, 3] whose value at column c is c / 100 (so a column can be told apart after a crop)."""
    values = torch.arange(width, dtype=torch.float32) / 100
    return values.expand(1, height, width)[..., None].expand(1, height, width, 3).clone()


def test_image_invert_is_one_minus_the_image() -> None:
    image = torch.rand(2, 3, 4, 3)
    assert torch.equal(ImageInvert().invert(image)[0], 1.0 - image)


def test_image_scale_center_crop_keeps_the_middle_columns() -> None:
    """8x4 to 4x4: the aspect 2 is cropped to 1 by dropping round((8 - 4) / 2) = 2 columns each side."""
    image = columns_image(4, 8)
    (out,) = ImageScale().upscale(image, "nearest-exact", 4, 4, "center")
    assert torch.equal(out, image[:, :, 2:6])


@pytest.mark.parametrize(("width", "columns"), [(5, [2, 2]), (7, [2, 4]), (9, [4, 4])])
def test_image_scale_center_crop_rounds_half_to_even(width: int, columns: list[int]) -> None:
    """Cropping W x 2 to a square drops (W - 2) / 2 columns each side, rounded as Python rounds: 1.5 -> 2
    (one column left), 2.5 -> 2 (three left), 3.5 -> 4 (one left); then nearest-exact to 2 x 2."""
    image = columns_image(2, width)
    (out,) = ImageScale().upscale(image, "nearest-exact", 2, 2, "center")
    assert out.shape == (1, 2, 2, 3)
    assert torch.equal(out[0, 0, :, 0], torch.tensor(columns, dtype=torch.float32) / 100)


def test_image_scale_without_crop_stretches() -> None:
    (out,) = ImageScale().upscale(columns_image(4, 8), "bilinear", 300, 200, "disabled")
    assert out.shape == (1, 200, 300, 3)


@pytest.mark.parametrize(
    ("width", "height", "size"), [(0, 2, (2, 4)), (2, 0, (1, 2)), (0, 0, (4, 8)), (0, 1, (1, 2))]
)
def test_image_scale_zero_side_follows_the_aspect_ratio(
    width: int, height: int, size: tuple[int, int]
) -> None:
    (out,) = ImageScale().upscale(columns_image(4, 8), "area", width, height, "disabled")
    assert tuple(out.shape[1:3]) == size


def test_image_scale_by_rounds_half_to_even() -> None:
    """10x6 by 1.25: 12.5 rounds to 12 and 7.5 to 8."""
    (out,) = ImageScaleBy().upscale(torch.rand(1, 6, 10, 3), "bicubic", 1.25)
    assert out.shape == (1, 8, 12, 3)


def test_lanczos_is_pillows_8bit_filter() -> None:
    image = torch.rand(1, 9, 7, 3, generator=torch.Generator().manual_seed(0))
    (out,) = ImageScale().upscale(image, "lanczos", 13, 5, "disabled")
    pixels = np.clip(255.0 * image[0].numpy(), 0, 255).astype(np.uint8)
    expected = np.array(Image.fromarray(pixels).resize((13, 5), Image.Resampling.LANCZOS)) / 255.0
    assert torch.equal(out[0], torch.from_numpy(expected.astype(np.float32)))


def test_lanczos_of_a_single_channel_resizes_it_alone() -> None:
    image = torch.rand(1, 9, 7, 1, generator=torch.Generator().manual_seed(1))
    (out,) = ImageScale().upscale(image, "lanczos", 4, 4, "disabled")
    pixels = np.clip(255.0 * image[0, ..., 0].numpy(), 0, 255).astype(np.uint8)
    expected = np.array(Image.fromarray(pixels).resize((4, 4), Image.Resampling.LANCZOS)) / 255.0
    assert torch.equal(out[0, ..., 0], torch.from_numpy(expected.astype(np.float32)))


def test_bislerp_follows_the_great_circle_between_neighbours() -> None:
    """Two orthogonal unit vectors, 1 wide, to 4 wide: samples at fractions 0, 1/4, 3/4, 1 between them
    lie on the unit circle (a linear blend would shrink them)."""
    latent = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(1, 2, 1, 2)
    out = bislerp(latent, 4, 1)
    angles = torch.tensor([0.0, math.pi / 8, 3 * math.pi / 8, math.pi / 2])
    expected = torch.stack([torch.cos(angles), torch.sin(angles)]).reshape(1, 2, 1, 4)
    torch.testing.assert_close(out, expected)


def test_bislerp_keeps_parallel_vectors_and_scales_lengths_linearly() -> None:
    """Vectors at 90 degrees with lengths 1 and 3 blend to length 2 halfway."""
    latent = torch.tensor([[1.0, 0.0], [0.0, 3.0]]).reshape(1, 2, 1, 2)
    out = bislerp(latent, 3, 1)
    assert math.isclose(out[0, :, 0, 1].norm().item(), 2.0, rel_tol=1e-5)


@pytest.mark.parametrize(
    ("height", "width", "size"),
    [(50, 100, (32, 64)), (100, 50, (64, 32)), (30, 30, (64, 64)), (3, 7, (27, 64))],
)
def test_scale_to_max_dimension_sets_the_longer_side(height: int, width: int, size: tuple[int, int]) -> None:
    (out,) = ImageScaleToMaxDimension().upscale(torch.rand(1, height, width, 3), "area", 64)
    assert tuple(out.shape[1:3]) == size


@pytest.mark.parametrize(("steps", "size"), [(1, (512, 1024)), (100, (500, 1000)), (64, (512, 1024))])
def test_scale_to_total_pixels_keeps_the_aspect_in_resolution_steps(
    steps: int, size: tuple[int, int]
) -> None:
    """256x512 to 0.5 megapixels (2^19 pixels) is a scale of exactly 2."""
    (out,) = ImageScaleToTotalPixels().upscale(torch.rand(1, 256, 512, 3), "nearest-exact", 0.5, steps)
    assert tuple(out.shape[1:3]) == size


def test_scale_to_total_pixels_refuses_a_side_of_zero() -> None:
    with pytest.raises(ValueError, match="resolution_steps"):
        ImageScaleToTotalPixels().upscale(torch.rand(1, 4, 4, 3), "area", 0.01, 256)


def test_get_image_size_is_width_height_batch() -> None:
    assert GetImageSize().get_size(torch.zeros(3, 5, 7, 3), "12") == (7, 5, 3)


def test_image_crop_cuts_at_the_edges_and_keeps_at_least_one_pixel() -> None:
    image = columns_image(4, 8)
    (inside,) = ImageCrop().crop(image, width=3, height=2, x=2, y=1)
    assert torch.equal(inside, image[:, 1:3, 2:5])
    (beyond,) = ImageCrop().crop(image, width=512, height=512, x=100, y=100)
    assert torch.equal(beyond, image[:, 3:, 7:])


def test_flip_and_rotate() -> None:
    image = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    (vertical,) = ImageFlip().flip(image, "x-axis: vertically")
    assert vertical.flatten().tolist() == [3.0, 4.0, 1.0, 2.0]
    (horizontal,) = ImageFlip().flip(image, "y-axis: horizontally")
    assert horizontal.flatten().tolist() == [2.0, 1.0, 4.0, 3.0]
    (clockwise,) = ImageRotate().rotate(image, "90 degrees")
    assert clockwise.flatten().tolist() == [3.0, 1.0, 4.0, 2.0]
    (half,) = ImageRotate().rotate(image, "180 degrees")
    assert half.flatten().tolist() == [4.0, 3.0, 2.0, 1.0]
    (none,) = ImageRotate().rotate(image, "none")
    assert torch.equal(none, image)


@pytest.mark.parametrize(
    ("direction", "size"), [("right", (4, 10)), ("left", (4, 10)), ("down", (10, 6)), ("up", (10, 6))]
)
def test_stitch_matching_sizes_resizes_image2_to_image1s_side(direction: str, size: tuple[int, int]) -> None:
    """A 4x6 image1 and a square image2: beside it image2 becomes 4x4, below it 6x6."""
    image1, image2 = torch.zeros(1, 4, 6, 3), torch.ones(1, 2, 2, 3)
    (out,) = ImageStitch().stitch(image1, direction, True, 0, "white", image2)
    assert tuple(out.shape[1:3]) == size
    first = out[0, 0, 0, 0] if direction in ("right", "down") else out[0, -1, -1, 0]
    assert first == 0.0


def test_stitch_spacing_is_rounded_up_to_even_and_coloured() -> None:
    (out,) = ImageStitch().stitch(torch.zeros(1, 4, 6, 3), "right", True, 3, "red", torch.zeros(1, 4, 4, 3))
    assert out.shape == (1, 4, 14, 3)
    assert torch.equal(out[0, :, 6:10], torch.tensor([1.0, 0.0, 0.0]).expand(4, 4, 3))


def test_stitch_without_matching_pads_the_smaller_centred_with_the_spacing_colour() -> None:
    (out,) = ImageStitch().stitch(torch.zeros(1, 4, 6, 3), "left", False, 0, "white", torch.zeros(1, 2, 3, 3))
    assert out.shape == (1, 4, 9, 3)
    column = out[0, :, 0, 0]
    assert column.tolist() == [1.0, 0.0, 0.0, 1.0]


def test_stitch_evens_batches_and_channels() -> None:
    image1 = torch.zeros(2, 2, 2, 4)
    image2 = torch.zeros(1, 2, 2, 3)
    (out,) = ImageStitch().stitch(image1, "right", False, 2, "black", image2)
    assert out.shape == (2, 2, 6, 4)
    assert torch.equal(out[..., 4:, 3], torch.ones(2, 2, 2))
    assert torch.equal(out[..., 2:4, :3], torch.zeros(2, 2, 2, 3))


def test_stitch_without_image2_returns_image1() -> None:
    image = torch.rand(1, 2, 2, 3)
    assert ImageStitch().stitch(image, "right", True, 0, "white")[0] is image


def test_pad_for_outpaint_puts_the_image_on_grey_and_feathers_the_mask() -> None:
    """10x10 padded 4 on the left with feathering 3: inside, column j gets ((3 - j) / 3)^2 for j < 3."""
    image = torch.rand(1, 10, 10, 3)
    canvas, mask = ImagePadForOutpaint().expand_image(image, left=4, top=0, right=0, bottom=0, feathering=3)
    assert canvas.shape == (1, 10, 14, 3) and mask.shape == (1, 10, 14)
    assert torch.equal(canvas[:, :, 4:], image)
    assert torch.equal(canvas[:, :, :4], torch.full((1, 10, 4, 3), 0.5))
    expected_row = torch.tensor([1.0, 1, 1, 1, 1, 4 / 9, 1 / 9, 0, 0, 0, 0, 0, 0, 0])
    torch.testing.assert_close(mask[0], expected_row.expand(10, 14))


def test_pad_for_outpaint_counts_the_bottom_edge_from_one() -> None:
    """ComfyUI measures the distance to a padded bottom (or right) side as H - i: its last row is 1 away."""
    _, mask = ImagePadForOutpaint().expand_image(torch.rand(1, 10, 10, 3), 0, 0, 0, 8, 3)
    torch.testing.assert_close(mask[0, 7:10, 5], torch.tensor([0.0, 1 / 9, 4 / 9]))
    assert torch.equal(mask[0, 10:], torch.ones(8, 10))


def test_pad_for_outpaint_skips_feathering_wider_than_half_the_image() -> None:
    _, mask = ImagePadForOutpaint().expand_image(torch.rand(1, 10, 10, 3), 8, 8, 8, 8, 5)
    assert torch.equal(mask[0, 8:18, 8:18], torch.zeros(10, 10))
    assert mask.sum() == 26 * 26 - 100


def test_image_batch_joins_and_resizes_image2_to_image1() -> None:
    image1, image2 = torch.zeros(2, 4, 4, 3), torch.ones(1, 8, 4, 3)
    (out,) = ImageBatch().batch(image1, image2)
    assert out.shape == (3, 4, 4, 3)
    assert torch.equal(out[2], torch.ones(4, 4, 3))


def test_image_batch_gives_an_rgb_image_an_opaque_alpha_beside_rgba() -> None:
    (out,) = ImageBatch().batch(torch.zeros(1, 2, 2, 3), torch.zeros(1, 2, 2, 4))
    assert out.shape == (2, 2, 2, 4)
    assert torch.equal(out[0, ..., 3], torch.ones(2, 2))


@pytest.mark.parametrize(
    ("index", "length", "picked"), [(1, 1, [1]), (1, 5, [1, 2]), (9, 2, [2]), (0, 3, [0, 1, 2])]
)
def test_image_from_batch_clamps_to_the_batch(index: int, length: int, picked: list[int]) -> None:
    batch = torch.arange(3, dtype=torch.float32).reshape(3, 1, 1, 1)
    (out,) = ImageFromBatch().frombatch(batch, index, length)
    assert out.flatten().tolist() == picked


def test_repeat_image_batch_repeats_the_whole_batch() -> None:
    batch = torch.arange(2, dtype=torch.float32).reshape(2, 1, 1, 1)
    (out,) = RepeatImageBatch().repeat(batch, 3)
    assert out.flatten().tolist() == [0, 1, 0, 1, 0, 1]
