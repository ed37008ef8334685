"""Canny on images whose edges are known: a ramp step (the edge is its middle column), flat images, and
hysteresis keeping a faint edge only where it joins a strong one.

(The implementation was also compared once with kornia 0.7.4's canny, which ComfyUI calls, on 1.6M
pixels of random and smooth images at several thresholds: identical. kornia is not a dependency.)
"""

from __future__ import annotations

import pytest
import torch

from engine.nodes.canny import Canny, canny_edges


def ramp_step(height: int = 16, width: int = 16, contrast: float = 1.0) -> torch.Tensor:
    """IMAGE [1, H, W, 3]: 0 left of column 8, contrast / 2 at 8, contrast right of it."""
    image = torch.zeros(1, height, width, 3)
    image[:, :, 8] = contrast / 2
    image[:, :, 9:] = contrast
    return image


def test_a_vertical_step_gives_its_middle_column() -> None:
    (edges,) = Canny().detect_edge(ramp_step(), 0.4, 0.8)
    expected = torch.zeros(16, 16)
    expected[:, 8] = 1.0
    assert edges.shape == (1, 16, 16, 3)
    for channel in range(3):
        assert torch.equal(edges[0, ..., channel], expected)


def test_a_horizontal_step_gives_its_middle_row() -> None:
    (edges,) = Canny().detect_edge(ramp_step().transpose(1, 2), 0.4, 0.8)
    expected = torch.zeros(16, 16)
    expected[8] = 1.0
    assert torch.equal(edges[0, ..., 0], expected)


def test_colour_is_read_as_luma() -> None:
    """A pure blue step has 0.114 of the contrast: below the low threshold 0.4 / 2.59 of a unit step."""
    blue = ramp_step() * torch.tensor([0.0, 0.0, 1.0])
    assert not Canny().detect_edge(blue, 0.4, 0.8)[0].any()
    assert Canny().detect_edge(blue, 0.1, 0.2)[0][0, :, 8, 0].all()


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_a_flat_image_has_no_edges(value: float) -> None:
    (edges,) = Canny().detect_edge(torch.full((2, 12, 12, 3), value), 0.01, 0.02)
    assert not edges.any()


def test_hysteresis_keeps_a_faint_edge_only_where_it_joins_a_strong_one() -> None:
    """Rows 0-11 step by 1 (magnitude about 2.6, strong), rows 12-23 by 0.3 (about 0.78: weak at 0.4/0.8)."""
    image = ramp_step(24, 16)
    image[:, 12:] *= 0.3
    edges = canny_edges(image.movedim(-1, 1), 0.4, 0.8)[0, 0]
    assert edges[:12, 8].all() and edges[14:, 8].all()
    faint_alone = canny_edges(image[:, 12:].movedim(-1, 1), 0.4, 0.8)
    assert not faint_alone.any()
    assert canny_edges(image[:, 12:].movedim(-1, 1), 0.4, 0.5)[0, 0, :, 8].all()


def test_thresholds_in_the_wrong_order_are_refused() -> None:
    with pytest.raises(ValueError, match="low_threshold"):
        Canny().detect_edge(ramp_step(), 0.8, 0.4)
