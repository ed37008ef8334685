"""The inpainting encode nodes with a VAE whose latent is each 8x8 cell's mean colour, so what was
encoded (greyed where masked, cropped to whole cells) reads back in closed form."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from engine.nodes.inpaint import InpaintModelConditioning, VAEEncodeForInpaint
from tests.nodes.fakes import AveragingVAE


def left_half_mask(height: int = 16, width: int = 16) -> torch.Tensor:
    mask = torch.zeros(1, height, width)
    mask[:, :, : width // 2] = 1.0
    return mask


def test_encode_for_inpaint_greys_the_masked_pixels() -> None:
    (latent,) = VAEEncodeForInpaint().encode(AveragingVAE(), torch.ones(1, 16, 16, 3), left_half_mask(), 0)
    assert torch.equal(latent["samples"][..., 0], torch.full((1, 3, 2), 0.5))
    assert torch.equal(latent["samples"][..., 1], torch.ones(1, 3, 2))
    assert torch.equal(latent["noise_mask"], left_half_mask()[:, None])


@pytest.mark.parametrize(("grow", "last_column"), [(6, 10), (5, 9), (1, 7), (2, 8)])
def test_encode_for_inpaint_grows_the_noise_mask_by_a_box(grow: int, last_column: int) -> None:
    """A box of g pixels reaches ceil((g - 1) / 2) pixels to the right of a masked one (ComfyUI's padding),
    cut back to the image: from column 7, the mask ends at 7 + that."""
    (latent,) = VAEEncodeForInpaint().encode(AveragingVAE(), torch.ones(1, 16, 16, 3), left_half_mask(), grow)
    noise_mask = latent["noise_mask"]
    assert noise_mask.shape == (1, 1, 16, 16)
    expected = torch.zeros(16)
    expected[: last_column + 1] = 1.0
    assert torch.equal(noise_mask[0, 0, 5], expected)


def test_encode_for_inpaint_rounds_the_mask_before_greying() -> None:
    faint = torch.full((1, 16, 16), 0.4)
    (latent,) = VAEEncodeForInpaint().encode(AveragingVAE(), torch.ones(1, 16, 16, 3), faint, 0)
    assert torch.equal(latent["samples"], torch.ones(1, 3, 2, 2))
    assert not latent["noise_mask"].any()


def test_encode_for_inpaint_crops_image_and_mask_alike() -> None:
    """18x20 pixels keep the centred 16x16; the 9x10 mask is first resized to 18x20."""
    vae = AveragingVAE()
    pixels = torch.rand(1, 18, 20, 3)
    mask = torch.zeros(1, 9, 10)
    mask[:, :, :5] = 1.0
    (latent,) = VAEEncodeForInpaint().encode(vae, pixels, mask, 0)
    assert latent["samples"].shape == (1, 3, 2, 2)
    assert latent["noise_mask"].shape == (1, 1, 16, 16)
    assert torch.equal(vae.encoded[0][..., 8:, :], pixels[:, 1:17, 10:18])
    assert torch.equal(latent["noise_mask"][0, 0, 0], torch.tensor([1.0] * 8 + [0.0] * 8))


def conditioning() -> list[list[Any]]:
    return [[torch.zeros(1, 2, 4), {"guidance": 3.5}]]


def test_inpaint_model_conditioning_samples_from_the_whole_image() -> None:
    vae = AveragingVAE()
    pixels = torch.ones(1, 16, 16, 3)
    mask = left_half_mask()
    positive, negative, latent = InpaintModelConditioning().encode(
        conditioning(), conditioning(), pixels, vae, mask, True
    )
    assert torch.equal(latent["samples"], torch.ones(1, 3, 2, 2))
    assert torch.equal(latent["noise_mask"], mask[:, None])
    for options in (positive[0][1], negative[0][1]):
        assert options["guidance"] == 3.5
        assert torch.equal(options["concat_latent_image"][..., 0], torch.full((1, 3, 2), 0.5))
        assert torch.equal(options["concat_latent_image"][..., 1], torch.ones(1, 3, 2))
        assert torch.equal(options["concat_mask"], mask[:, None])


def test_inpaint_model_conditioning_can_leave_out_the_noise_mask() -> None:
    _, _, latent = InpaintModelConditioning().encode(
        conditioning(), conditioning(), torch.ones(1, 16, 16, 3), AveragingVAE(), left_half_mask(), False
    )
    assert set(latent) == {"samples"}
