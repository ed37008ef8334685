"""Conditioning nodes: which options they set (ComfyUI's keys and units) and how they combine tensors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from engine.nodes.conditioning_ops import (
    CLIPTextEncodeFlux,
    ConditioningAverage,
    ConditioningCombine,
    ConditioningConcat,
    ConditioningSetArea,
    ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength,
    ConditioningSetMask,
    ConditioningSetTimestepRange,
    InstructPixToPixConditioning,
)
from tests.nodes.fakes import AveragingVAE, RecordingCLIP


def entry(value: float, tokens: int = 3, **options: Any) -> list[Any]:
    return [torch.full((1, tokens, 2), value), dict(options)]


def test_combine_lists_both_without_changing_them() -> None:
    first, second = [entry(1.0)], [entry(2.0), entry(3.0)]
    (combined,) = ConditioningCombine().combine(first, second)
    assert [c[0][0, 0, 0].item() for c in combined] == [1.0, 2.0, 3.0]
    assert len(first) == 1 and len(second) == 2


def test_concat_appends_the_first_from_entrys_tokens() -> None:
    to = [entry(1.0, 3, guidance=2.0), entry(2.0, 2)]
    (out,) = ConditioningConcat().concat(to, [entry(9.0, 4), entry(7.0, 1)])
    assert [c[0].shape[1] for c in out] == [7, 6]
    assert out[0][0][0, 3:, 0].tolist() == [9.0] * 4
    assert out[0][1] == {"guidance": 2.0} and out[0][1] is not to[0][1]


def test_average_blends_tokens_and_pools() -> None:
    to = [entry(1.0, 3, pooled_output=torch.ones(1, 2))]
    from_ = [entry(3.0, 3, pooled_output=torch.full((1, 2), 5.0))]
    (out,) = ConditioningAverage().addWeighted(to, from_, 0.25)
    assert torch.allclose(out[0][0], torch.full((1, 3, 2), 1.0 * 0.25 + 3.0 * 0.75))
    assert torch.allclose(out[0][1]["pooled_output"], torch.full((1, 2), 0.25 + 5.0 * 0.75))
    assert torch.equal(to[0][1]["pooled_output"], torch.ones(1, 2))


def test_average_cuts_or_pads_from_to_the_token_count_and_lends_its_pool() -> None:
    (longer,) = ConditioningAverage().addWeighted([entry(1.0, 2)], [entry(3.0, 5)], 0.5)
    assert torch.allclose(longer[0][0], torch.full((1, 2, 2), 2.0))
    pooled = torch.full((1, 2), 4.0)
    (shorter,) = ConditioningAverage().addWeighted(
        [entry(1.0, 4)], [entry(3.0, 2, pooled_output=pooled)], 0.5
    )
    assert shorter[0][0][0, :, 0].tolist() == [2.0, 2.0, 0.5, 0.5]
    assert torch.allclose(shorter[0][1]["pooled_output"], pooled)


def test_set_area_stores_latent_cells() -> None:
    original = [entry(1.0, guidance=3.5)]
    (out,) = ConditioningSetArea().append(original, width=200, height=120, x=64, y=8, strength=0.7)
    assert out[0][1] == {
        "guidance": 3.5,
        "area": (15, 25, 1, 8),
        "strength": 0.7,
        "set_area_to_bounds": False,
    }
    assert original[0][1] == {"guidance": 3.5}


def test_set_area_percentage_keeps_fractions_for_the_sampler() -> None:
    (out,) = ConditioningSetAreaPercentage().append([entry(1.0)], 0.5, 0.25, 0.1, 0.2, 1.5)
    assert out[0][1]["area"] == ("percentage", 0.25, 0.5, 0.2, 0.1)
    assert out[0][1]["strength"] == 1.5


def test_set_area_strength() -> None:
    (out,) = ConditioningSetAreaStrength().append([entry(1.0)], 2.5)
    assert out[0][1] == {"strength": 2.5}


@pytest.mark.parametrize(("choice", "bounds"), [("default", False), ("mask bounds", True)])
def test_set_mask_gives_a_batched_mask(choice: str, bounds: bool) -> None:
    mask = torch.ones(4, 6)
    (out,) = ConditioningSetMask().append([entry(1.0)], mask, choice, 0.5)
    options = out[0][1]
    assert options["mask"].shape == (1, 4, 6)
    assert options["set_area_to_bounds"] is bounds and options["mask_strength"] == 0.5


def test_set_timestep_range() -> None:
    (out,) = ConditioningSetTimestepRange().set_range([entry(1.0)], 0.2, 0.8)
    assert out[0][1] == {"start_percent": 0.2, "end_percent": 0.8}


def test_clip_text_encode_flux_sends_each_prompt_to_its_encoder() -> None:
    clip = RecordingCLIP()
    (out,) = CLIPTextEncodeFlux().encode(clip, "a photo", "a detailed photo of a cat", 2.5)
    assert clip.encoded == [{"l": "l:a photo", "t5xxl": "t5xxl:a detailed photo of a cat"}]
    assert out[0][1]["guidance"] == 2.5 and "pooled_output" in out[0][1]


def test_clip_text_encode_flux_needs_flux_encoders() -> None:
    with pytest.raises(ValueError, match="t5xxl"):
        CLIPTextEncodeFlux().encode(RecordingCLIP(encoders={"l": None}), "a", "b", 3.5)
    with pytest.raises(ValueError, match="DualCLIPLoader"):
        CLIPTextEncodeFlux().encode(None, "a", "b", 3.5)


def test_instruct_pix2pix_attaches_the_images_latent_and_starts_from_zeros() -> None:
    vae = AveragingVAE()
    pixels = torch.rand(1, 20, 16, 3)
    positive, negative, latent = InstructPixToPixConditioning().encode(
        [entry(1.0)], [entry(2.0)], pixels, vae
    )
    image = positive[0][1]["concat_latent_image"]
    assert image.shape == (1, 3, 2, 2)
    assert negative[0][1]["concat_latent_image"] is image
    assert torch.equal(latent["samples"], torch.zeros(1, 3, 2, 2))
    assert torch.equal(vae.encoded[0], pixels[:, 2:18])
