"""Classifier-free guidance and conditioning: what the model is asked, how often, and how answers combine."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from engine.diffusion.sampling.guiders import BasicGuider, CFGGuider
from tests.sampling.analytic import GaussianFlowModel, prompt

Make = Callable[..., GaussianFlowModel]


def one_prediction(
    guider: CFGGuider, keep_uncond: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, sigma, guided x0) of one denoiser call at sigma 0.6 on a batch of two."""
    x = torch.randn((2, *guider.model.mu.shape), generator=torch.Generator().manual_seed(0))
    sigma = torch.full((2,), 0.6)
    return x, sigma, guider.denoiser((2, *guider.model.mu.shape), keep_uncond)(x, sigma)


@pytest.mark.parametrize("cfg", [0.0, 3.5, 8.0])
def test_cfg_extrapolates_x0_from_negative_towards_positive(cfg: float, make_model: Make) -> None:
    model = make_model((4, 8, 8))
    x, sigma, guided = one_prediction(CFGGuider(model, prompt(0.5), prompt(-0.25), cfg))
    positive, negative = model.denoise(x, sigma, 0.5), model.denoise(x, sigma, -0.25)
    torch.testing.assert_close(guided, negative + (positive - negative) * cfg)


def test_positive_and_negative_share_one_forward(make_model: Make) -> None:
    model = make_model((4, 8, 8))
    one_prediction(CFGGuider(model, prompt(0.5), prompt(-0.25), 4.0))
    assert len(model.forwards) == 1
    assert model.forwards[0].x.shape[0] == 4
    assert model.forwards[0].inputs.context.shape == (4, 4, 8)


def test_cfg_one_skips_the_negative_prompt(make_model: Make) -> None:
    model = make_model((4, 8, 8))
    x, sigma, guided = one_prediction(CFGGuider(model, prompt(0.5), prompt(-0.25), 1.0))
    assert [forward.x.shape[0] for forward in model.forwards] == [2]
    torch.testing.assert_close(guided, model.denoise(x, sigma, 0.5))


def test_cfg_pp_samplers_get_the_negative_prediction_even_at_cfg_one(make_model: Make) -> None:
    model = make_model((4, 8, 8))
    guider = CFGGuider(model, prompt(0.5), prompt(-0.25), 1.0)
    x, sigma, _ = one_prediction(guider)
    denoiser = guider.denoiser((2, 4, 8, 8), keep_uncond=True)
    denoiser(x, sigma)
    assert model.forwards[-1].x.shape[0] == 4
    torch.testing.assert_close(denoiser.uncond_denoised, model.denoise(x, sigma, -0.25))


def test_basic_guider_has_no_negative_and_reports_it_as_zero(make_model: Make) -> None:
    """As in ComfyUI, a cfg++ sampler under BasicGuider steps along a zero unguided prediction."""
    model = make_model((4, 8, 8))
    denoiser = BasicGuider(model, prompt(0.5)).denoiser((2, 4, 8, 8), keep_uncond=True)
    x, sigma = torch.randn(2, 4, 8, 8), torch.full((2,), 0.6)
    torch.testing.assert_close(denoiser(x, sigma), model.denoise(x, sigma, 0.5))
    assert [forward.x.shape[0] for forward in model.forwards] == [2]
    assert torch.equal(denoiser.uncond_denoised, torch.zeros_like(x))


@pytest.mark.parametrize(
    ("tokens", "forwards"), [((256, 512), 1), ((77, 308), 1), ((77, 256), 2), ((100, 500), 2)]
)
def test_prompts_of_different_length_batch_when_a_small_repeat_evens_them(
    tokens: tuple[int, int], forwards: int, make_model: Make
) -> None:
    """Token counts are repeated up to their least common multiple when that is at most 4x the shorter."""
    model = make_model((4, 8, 8))
    x, sigma, guided = one_prediction(CFGGuider(model, prompt(0.5, tokens[0]), prompt(-0.25, tokens[1]), 2.0))
    assert len(model.forwards) == forwards
    positive, negative = model.denoise(x, sigma, 0.5), model.denoise(x, sigma, -0.25)
    torch.testing.assert_close(guided, negative + (positive - negative) * 2.0)


def test_several_conditioning_entries_are_averaged(make_model: Make) -> None:
    model = make_model((4, 8, 8))
    two_prompts = prompt(0.5) + prompt(0.1)
    x, sigma, guided = one_prediction(BasicGuider(model, two_prompts))
    average = (model.denoise(x, sigma, 0.5) + model.denoise(x, sigma, 0.1)) / 2
    torch.testing.assert_close(guided, average)


def test_flux_guidance_reaches_the_model_per_sample(make_model: Make) -> None:
    model = make_model((4, 8, 8))
    pooled = torch.randn(1, 768)
    one_prediction(BasicGuider(model, prompt(0.5, guidance=3.5, pooled_output=pooled)))
    inputs = model.forwards[0].inputs
    assert torch.equal(inputs.guidance, torch.full((2,), 3.5))
    assert torch.equal(inputs.pooled, pooled.repeat(2, 1))


def test_conditioning_without_guidance_leaves_it_to_the_model(make_model: Make) -> None:
    model = make_model((4, 8, 8))
    one_prediction(BasicGuider(model, prompt(0.5)))
    assert model.forwards[0].inputs.guidance is None
    assert model.forwards[0].inputs.pooled is None


@pytest.mark.parametrize("key", ["control", "gligen", "hooks"])
def test_conditioning_the_engine_cannot_apply_is_refused(key: str, make_model: Make) -> None:
    model = make_model((4, 8, 8))
    with pytest.raises(ValueError, match=key):
        one_prediction(BasicGuider(model, prompt(0.5, **{key: object()})))


def test_timestep_range_limits_an_entry_to_part_of_the_schedule(make_model: Make) -> None:
    """ConditioningSetTimestepRange: an entry for the first half of sampling is not used at the end."""
    model = make_model((4, 8, 8))
    guider = BasicGuider(model, prompt(0.5, start_percent=0.0, end_percent=0.5) + prompt(0.1))
    denoiser = guider.denoiser((1, 4, 8, 8), keep_uncond=False)
    x = torch.randn(1, 4, 8, 8)
    early, late = torch.tensor([0.95]), torch.tensor([0.05])
    average = (model.denoise(x, early, 0.5) + model.denoise(x, early, 0.1)) / 2
    torch.testing.assert_close(denoiser(x, early), average)
    torch.testing.assert_close(denoiser(x, late), model.denoise(x, late, 0.1))
