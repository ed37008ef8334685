"""The sampling nodes as a graph runs them: the ways of sampling agree, and behave as ComfyUI's do."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import torch

from engine.diffusion.latent_formats import FLUX, SDXL
from engine.diffusion.sampling.model_sampling import DiscreteFlow, FluxFlow
from engine.diffusion.sampling.preview import LatentPreviewer
from engine.nodes.sampling import (
    BasicGuider,
    BasicScheduler,
    CFGGuider,
    KSampler,
    KSamplerAdvanced,
    KSamplerSelect,
    ModelSamplingAuraFlow,
    ModelSamplingFlux,
    ModelSamplingSD3,
    RandomNoise,
    SamplerCustom,
    SamplerCustomAdvanced,
)
from engine.progress import Interrupted, node_context
from tests.comfy_fixtures import index
from tests.sampling.analytic import GaussianFlowModel, prompt

Make = Callable[..., GaussianFlowModel]
POSITIVE, NEGATIVE = prompt(0.4), prompt(-0.2)


def flux_model(make_model: Make) -> GaussianFlowModel:
    return make_model((16, 8, 8), model_sampling=FluxFlow(1.15), latent_format=FLUX)


def image_latent(channels: int = 16) -> dict[str, Any]:
    return {"samples": torch.randn((1, channels, 8, 8), generator=torch.Generator().manual_seed(11))}


@pytest.mark.parametrize(("sampler", "scheduler"), [("dpmpp_2m", "karras"), ("euler_ancestral", "simple")])
def test_ksampler_and_custom_sampling_give_the_same_latent(
    sampler: str, scheduler: str, make_model: Make
) -> None:
    model = flux_model(make_model)
    latent = {"samples": torch.zeros(2, 16, 8, 8)}
    ksampled = KSampler().sample(model, 7, 8, 3.0, sampler, scheduler, POSITIVE, NEGATIVE, latent)[0]
    sigmas = BasicScheduler().get_sigmas(model, scheduler, 8, 1.0)[0]
    chosen = KSamplerSelect().get_sampler(sampler)[0]
    guider = CFGGuider().get_guider(model, POSITIVE, NEGATIVE, 3.0)[0]
    advanced = SamplerCustomAdvanced().sample(RandomNoise().get_noise(7)[0], guider, chosen, sigmas, latent)[
        0
    ]
    custom = SamplerCustom().sample(model, True, 7, 3.0, POSITIVE, NEGATIVE, chosen, sigmas, latent)[0]
    assert torch.equal(ksampled["samples"], advanced["samples"])
    assert torch.equal(ksampled["samples"], custom["samples"])


@pytest.mark.parametrize("sampler", ["euler", "heun"])
def test_two_advanced_stages_equal_one_run(sampler: str, make_model: Make) -> None:
    """Stop at step 4 with the leftover noise, continue from there without new noise: the same image."""
    model = flux_model(make_model)
    latent = {"samples": torch.zeros(1, 16, 8, 8)}
    whole = KSampler().sample(model, 3, 10, 2.0, sampler, "simple", POSITIVE, NEGATIVE, latent)[0]
    first = KSamplerAdvanced().sample(
        model, "enable", 3, 10, 2.0, sampler, "simple", POSITIVE, NEGATIVE, latent, 0, 4, "enable"
    )[0]
    second = KSamplerAdvanced().sample(
        model, "disable", 3, 10, 2.0, sampler, "simple", POSITIVE, NEGATIVE, first, 4, 10000, "disable"
    )[0]
    torch.testing.assert_close(second["samples"], whole["samples"], rtol=1e-5, atol=1e-5)


def test_denoise_starts_from_the_image_noised_to_the_schedules_level(make_model: Make) -> None:
    model = flux_model(make_model)
    latent = image_latent()
    KSampler().sample(model, 5, 10, 1.0, "euler", "simple", POSITIVE, NEGATIVE, latent, 0.5)
    start = BasicScheduler().get_sigmas(model, "simple", 20, 1.0)[0][-11]
    noise = torch.randn((1, 16, 8, 8), generator=torch.Generator().manual_seed(5))
    expected = start * noise + (1 - start) * FLUX.process_in(latent["samples"])
    assert len(model.forwards) == 10
    assert torch.equal(model.forwards[0].sigma, start.reshape(1))
    torch.testing.assert_close(model.forwards[0].x, expected)


def test_empty_latent_for_another_vae_gets_the_models_channels(make_model: Make) -> None:
    """A 4-channel EmptyLatentImage works with 16-channel Flux, as in ComfyUI's Flux schnell example."""
    model = flux_model(make_model)
    out = KSampler().sample(
        model, 1, 2, 1.0, "euler", "simple", POSITIVE, NEGATIVE, {"samples": torch.zeros(1, 4, 8, 8)}
    )
    assert out[0]["samples"].shape == (1, 16, 8, 8)


def test_output_latent_keeps_batch_index_and_mask(make_model: Make) -> None:
    model = make_model((4, 8, 8))
    mask = torch.ones(1, 1, 64, 64)
    latent = {"samples": torch.zeros(2, 4, 8, 8), "batch_index": [4, 5], "noise_mask": mask}
    out = KSampler().sample(model, 1, 2, 1.0, "euler", "simple", POSITIVE, NEGATIVE, latent)[0]
    assert out["batch_index"] == [4, 5]
    assert out["noise_mask"] is mask


def test_inpainting_keeps_the_unmasked_region(make_model: Make) -> None:
    model = make_model((4, 8, 8))
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, 32:] = 1.0
    latent = {"samples": torch.randn(1, 4, 8, 8), "noise_mask": mask}
    out = KSampler().sample(model, 1, 6, 1.0, "ddim", "simple", POSITIVE, NEGATIVE, latent)[0]["samples"]
    torch.testing.assert_close(out[..., :4], latent["samples"][..., :4])
    assert not torch.allclose(out[..., 4:], latent["samples"][..., 4:])


def test_starting_past_the_last_step_returns_the_latent_untouched(make_model: Make) -> None:
    model = make_model((4, 8, 8))
    latent = image_latent(4)
    out = KSamplerAdvanced().sample(
        model, "enable", 1, 10, 1.0, "euler", "simple", POSITIVE, NEGATIVE, latent, 10, 10000, "disable"
    )[0]
    assert torch.equal(out["samples"], latent["samples"])
    assert model.forwards == []


def test_denoised_output_is_the_last_steps_clean_estimate(make_model: Make) -> None:
    model = flux_model(make_model)
    sigmas = torch.tensor([1.0, 0.5, 0.2])
    guider = BasicGuider().get_guider(model, POSITIVE)[0]
    sampler = KSamplerSelect().get_sampler("euler")[0]
    output, denoised = SamplerCustomAdvanced().sample(
        RandomNoise().get_noise(2)[0], guider, sampler, sigmas, image_latent()
    )
    last = model.forwards[-1]
    expected = FLUX.process_out(model.denoise(last.x, last.sigma, 0.4))
    torch.testing.assert_close(denoised["samples"], expected)
    assert not torch.allclose(output["samples"], denoised["samples"])


def test_each_step_reports_progress_with_a_preview(make_model: Make) -> None:
    model = make_model((4, 8, 8), latent_format=SDXL)
    events: list[tuple[float, float, Any]] = []
    with node_context(
        "3", lambda value, total, preview: events.append((value, total, preview)), threading.Event()
    ):
        KSampler().sample(
            model, 1, 5, 1.0, "euler", "simple", POSITIVE, NEGATIVE, {"samples": torch.zeros(1, 4, 8, 8)}
        )
    assert [(value, total) for value, total, _ in events] == [(step, 5) for step in range(1, 6)]
    assert all(preview.mode == "RGB" and preview.size == (8, 8) for _, _, preview in events)


def test_preview_is_the_formats_linear_rgb_map_of_the_first_image() -> None:
    latent = torch.zeros(2, 4, 3, 5)
    latent[0, 0] = 1.0
    latent[0, 3] = -0.5
    pixel = (
        torch.tensor(SDXL.rgb_factors[0])
        - 0.5 * torch.tensor(SDXL.rgb_factors[3])
        + torch.tensor(SDXL.rgb_bias)
    )
    expected = ((pixel + 1) / 2).clamp(0, 1).mul(255).to(torch.uint8)
    image = LatentPreviewer(SDXL).preview(latent)
    assert image.size == (5, 3)
    assert image.getpixel((2, 1)) == tuple(expected.tolist())


def test_interrupt_stops_sampling_at_the_next_step(make_model: Make) -> None:
    model = make_model((4, 8, 8))
    interrupt = threading.Event()

    def stop_after_two(value: float, total: float, preview: Any) -> None:
        if value >= 2:
            interrupt.set()

    with node_context("3", stop_after_two, interrupt), pytest.raises(Interrupted):
        KSampler().sample(
            model, 1, 20, 1.0, "euler", "simple", POSITIVE, NEGATIVE, {"samples": torch.zeros(1, 4, 8, 8)}
        )
    assert len(model.forwards) == 2


def test_model_sampling_nodes_patch_a_clone(make_model: Make) -> None:
    model = make_model((4, 8, 8), model_sampling=DiscreteFlow(1.0))
    aura = ModelSamplingAuraFlow().patch_aura(model, 1.73)[0]
    flux = ModelSamplingFlux().patch(model, 1.15, 0.5, 512, 768)[0]
    sd3 = ModelSamplingSD3().patch(model, 3.0)[0]
    assert model.model_sampling.shift == 1.0
    recorded = {name: value["model_sampling"] for name, value in index("sigmas")["samplings"].items()}
    aura_recorded, sd3_recorded = recorded["auraflow_shift1.73"], recorded["sd3_shift3.0"]
    assert (aura.model_sampling.shift, aura.model_sampling.multiplier) == (
        aura_recorded["shift"],
        aura_recorded["multiplier"],
    )
    assert flux.model_sampling.mu == pytest.approx(recorded["flux_dev_512x768"]["shift"], rel=1e-12)
    assert (sd3.model_sampling.shift, sd3.model_sampling.multiplier) == (
        sd3_recorded["shift"],
        sd3_recorded["multiplier"],
    )
    assert float(sd3.model_sampling.timestep(torch.tensor(0.5))) == 0.5 * sd3_recorded["multiplier"]
