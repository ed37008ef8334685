"""The mask nodes against closed-form answers, and GrowMask against scipy.ndimage (what ComfyUI calls)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from engine import folders
from engine.nodes.mask import (
    CropMask,
    FeatherMask,
    GrowMask,
    ImageColorToMask,
    ImageToMask,
    InvertMask,
    LoadImageMask,
    MaskComposite,
    MaskPreview,
    MaskToImage,
    SolidMask,
    ThresholdMask,
)

CROSS = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


def dot(size: int = 7, row: int = 3, column: int = 3) -> torch.Tensor:
    mask = torch.zeros(1, size, size)
    mask[0, row, column] = 1.0
    return mask


def test_grow_by_one_with_tapered_corners_gives_a_cross() -> None:
    (grown,) = GrowMask().expand_mask(dot(), 1, tapered_corners=True)
    expected = torch.zeros(1, 7, 7)
    expected[0, 2:5, 2:5] = torch.tensor(CROSS, dtype=torch.float32)
    assert torch.equal(grown, expected)


def test_grow_by_one_without_tapered_corners_gives_a_square() -> None:
    (grown,) = GrowMask().expand_mask(dot(), 1, tapered_corners=False)
    expected = torch.zeros(1, 7, 7)
    expected[0, 2:5, 2:5] = 1.0
    assert torch.equal(grown, expected)


def test_grow_by_two_with_tapered_corners_gives_a_diamond() -> None:
    (grown,) = GrowMask().expand_mask(dot(), 2, tapered_corners=True)
    rows, columns = torch.meshgrid(torch.arange(7), torch.arange(7), indexing="ij")
    assert torch.equal(grown[0], ((rows - 3).abs() + (columns - 3).abs() <= 2).float())


def test_shrinking_the_cross_by_one_leaves_its_centre() -> None:
    (grown,) = GrowMask().expand_mask(dot(), 1, tapered_corners=True)
    (shrunk,) = GrowMask().expand_mask(grown, -1, tapered_corners=True)
    assert torch.equal(shrunk, dot())


@pytest.mark.parametrize("expand", [-3, -1, 0, 2, 5])
@pytest.mark.parametrize("tapered", [True, False])
def test_grow_mask_is_scipy_grey_dilation_and_erosion_repeated(expand: int, tapered: bool) -> None:
    """ComfyUI's GrowMask runs scipy.ndimage.grey_dilation (or erosion) |expand| times with a 3x3 footprint,
    including at the borders; grey values included."""
    masks = torch.rand(2, 9, 13, generator=torch.Generator().manual_seed(expand))
    footprint = np.array(CROSS if tapered else [[1, 1, 1]] * 3)
    expected = []
    for plane in masks.numpy():
        for _ in range(abs(expand)):
            step = scipy.ndimage.grey_dilation if expand > 0 else scipy.ndimage.grey_erosion
            plane = step(plane, footprint=footprint)
        expected.append(torch.from_numpy(plane))
    (grown,) = GrowMask().expand_mask(masks, expand, tapered)
    assert torch.equal(grown, torch.stack(expected))


def test_growing_far_beyond_the_mask_size_fills_it() -> None:
    (grown,) = GrowMask().expand_mask(dot(), 16384, tapered_corners=True)
    assert torch.equal(grown, torch.ones(1, 7, 7))


def test_solid_mask_is_one_value_of_the_given_size() -> None:
    (mask,) = SolidMask().solid(0.25, width=5, height=3)
    assert mask.shape == (1, 3, 5) and mask.dtype == torch.float32
    assert torch.equal(mask, torch.full((1, 3, 5), 0.25))


def test_invert_mask_is_one_minus_the_mask() -> None:
    mask = torch.tensor([[[0.0, 0.25, 1.0]]])
    assert torch.equal(InvertMask().invert(mask)[0], torch.tensor([[[1.0, 0.75, 0.0]]]))


@pytest.mark.parametrize(
    ("operation", "expected"),
    [
        ("multiply", [0, 0, 0, 1]),
        ("add", [0, 1, 1, 1]),
        ("subtract", [0, 0, 1, 0]),
        ("and", [0, 0, 0, 1]),
        ("or", [0, 1, 1, 1]),
        ("xor", [0, 1, 1, 0]),
    ],
)
def test_mask_composite_truth_table(operation: str, expected: list[int]) -> None:
    """Destination 0 0 1 1 with source 0 1 0 1 laid over it; add and subtract clamp to 0..1."""
    destination = torch.tensor([[[0.0, 0.0, 1.0, 1.0]]])
    source = torch.tensor([[[0.0, 1.0, 0.0, 1.0]]])
    (out,) = MaskComposite().combine(destination, source, 0, 0, operation)
    assert torch.equal(out, torch.tensor([[expected]], dtype=torch.float32))


def test_mask_composite_logic_thresholds_at_one_half() -> None:
    (out,) = MaskComposite().combine(torch.tensor([[[0.4, 0.6]]]), torch.tensor([[[0.6, 0.6]]]), 0, 0, "and")
    assert torch.equal(out, torch.tensor([[[0.0, 1.0]]]))


def test_mask_composite_places_the_source_and_cuts_it_at_the_edges() -> None:
    destination = torch.zeros(1, 4, 4)
    (out,) = MaskComposite().combine(destination, torch.ones(1, 3, 3), 2, 1, "add")
    expected = torch.zeros(1, 4, 4)
    expected[0, 1:4, 2:4] = 1.0
    assert torch.equal(out, expected)
    (outside,) = MaskComposite().combine(destination, torch.ones(1, 3, 3), 9, 9, "add")
    assert torch.equal(outside, destination)


def test_mask_composite_clamps_the_whole_result() -> None:
    (out,) = MaskComposite().combine(torch.tensor([[[2.0, -1.0]]]), torch.zeros(1, 1, 1), 0, 0, "add")
    assert torch.equal(out, torch.tensor([[[1.0, 0.0]]]))


def test_threshold_mask_is_strictly_above_the_value() -> None:
    (out,) = ThresholdMask().image_to_mask(torch.tensor([[0.2, 0.5, 0.7]]), 0.5)
    assert torch.equal(out, torch.tensor([[0.0, 0.0, 1.0]]))


def test_crop_mask_takes_the_rectangle() -> None:
    mask = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    (out,) = CropMask().crop(mask, x=1, y=2, width=3, height=5)
    assert torch.equal(out, mask[None, 2:4, 1:4])


def test_feather_mask_ramps_linearly_towards_each_chosen_edge() -> None:
    (out,) = FeatherMask().feather(torch.ones(1, 2, 6), left=4, top=0, right=2, bottom=0)
    row = torch.tensor([0.25, 0.5, 0.75, 1.0, 1.0, 0.5])
    assert torch.allclose(out, row.expand(1, 2, 6))
    (top_only,) = FeatherMask().feather(torch.ones(1, 3, 2), left=0, top=3, right=0, bottom=0)
    assert torch.allclose(top_only[0, :, 0], torch.tensor([1 / 3, 2 / 3, 1.0]))


def test_mask_to_image_repeats_the_mask_in_three_channels() -> None:
    mask = torch.rand(2, 3, 4)
    (image,) = MaskToImage().mask_to_image(mask)
    assert image.shape == (2, 3, 4, 3)
    for channel in range(3):
        assert torch.equal(image[..., channel], mask)
    (single,) = MaskToImage().mask_to_image(mask[0])
    assert single.shape == (1, 3, 4, 3)


@pytest.mark.parametrize(("channel", "index"), [("red", 0), ("green", 1), ("blue", 2), ("alpha", 3)])
def test_image_to_mask_takes_one_channel(channel: str, index: int) -> None:
    image = torch.rand(2, 3, 4, 4)
    (mask,) = ImageToMask().image_to_mask(image, channel)
    assert torch.equal(mask, image[..., index])


def test_image_to_mask_alpha_of_an_rgb_image_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="no alpha channel"):
        ImageToMask().image_to_mask(torch.rand(1, 2, 2, 3), "alpha")


def test_image_color_to_mask_matches_the_exact_8bit_colour() -> None:
    """Green 0.001 is 0.255 of a level (rounds to 0, a match); 0.003 is 0.765 (rounds to 1, no match)."""
    image = torch.tensor([[[[1.0, 0.0, 0.0], [1.0, 0.001, 0.0], [1.0, 0.003, 0.0]]]])
    (mask,) = ImageColorToMask().image_to_mask(image, 0xFF0000)
    assert torch.equal(mask, torch.tensor([[[1.0, 1.0, 0.0]]]))


def test_load_image_mask_reads_a_channel_and_inverts_alpha(dirs: folders.FolderSettings) -> None:
    rgba = np.zeros((3, 2, 4), dtype=np.uint8)
    rgba[..., 0] = 51
    rgba[..., 3] = 255
    rgba[1, 1, 3] = 0
    Image.fromarray(rgba, "RGBA").save(dirs.input_dir / "cut.png")
    (dirs.input_dir / "notes.txt").write_text("listed too, as ComfyUI lists every file")

    assert LoadImageMask.INPUT_TYPES()["required"]["image"][0] == ["cut.png", "notes.txt"]
    (alpha,) = LoadImageMask().load_image("cut.png", "alpha")
    expected = torch.zeros(1, 3, 2)
    expected[0, 1, 1] = 1.0
    assert torch.equal(alpha, expected)
    (red,) = LoadImageMask().load_image("cut.png", "red")
    assert torch.allclose(red, torch.full((1, 3, 2), 0.2))


def test_load_image_mask_of_an_rgb_file_has_no_transparency(dirs: folders.FolderSettings) -> None:
    Image.new("RGB", (4, 2), (0, 255, 0)).save(dirs.input_dir / "plain.png")
    (alpha,) = LoadImageMask().load_image("plain.png", "alpha")
    assert torch.equal(alpha, torch.zeros(1, 2, 4))
    (green,) = LoadImageMask().load_image("plain.png", "green")
    assert torch.equal(green, torch.ones(1, 2, 4))


@pytest.mark.parametrize("name", ["../secret.png", "/etc/passwd", "sub/../../secret.png"])
def test_load_image_mask_names_cannot_leave_the_input_folder(dirs: folders.FolderSettings, name: str) -> None:
    Image.new("RGB", (4, 4)).save(dirs.input_dir.parent / "secret.png")
    assert LoadImageMask.VALIDATE_INPUTS(name) == f"Invalid image file: {name}"
    with pytest.raises(folders.PathEscapeError):
        LoadImageMask().load_image(name, "alpha")


def test_mask_preview_saves_the_mask_as_a_grey_image(dirs: folders.FolderSettings) -> None:
    mask = torch.zeros(1, 4, 6)
    mask[0, :, :3] = 1.0
    result = MaskPreview().execute(mask)
    (entry,) = result["ui"]["images"]
    assert entry["type"] == "temp"
    with Image.open(dirs.temp_dir / entry["filename"]) as saved:
        pixels = np.array(saved.convert("RGB"))
    assert pixels.shape == (4, 6, 3)
    assert (pixels[:, :3] == 255).all() and (pixels[:, 3:] == 0).all()
