"""Every scheduler's sigmas, as the BasicScheduler node returns them, against closed forms computed here.

The expected values are computed in float64 from the formulas (COMFY.md §7, §8), independently of
the engine's float32 tables; they agree to float32 precision.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import scipy.stats
import torch

from engine.diffusion.sampling.model_sampling import DiscreteFlow
from engine.diffusion.sampling.sample import ksampler_sigmas
from engine.diffusion.sampling.samplers import SAMPLER_NAMES
from engine.nodes.sampling import BasicScheduler, ModelSamplingAuraFlow, ModelSamplingFlux
from tests.sampling.analytic import GaussianFlowModel


def discrete_flow(shift: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: shift * t / (1 + (shift - 1) * t)


def flux_dev(mu: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda t: math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def flux_mu(width: int, height: int) -> float:
    """ModelSamplingFlux: 0.5 at 256 image tokens, 1.15 at 4096, linear in between (tokens = W*H/256)."""
    return 0.5 + (width * height / 256 - 256) * (1.15 - 0.5) / (4096 - 256)


MODELS = {
    "auraflow": (discrete_flow(1.73), 1000),
    "flux_schnell": (discrete_flow(1.0), 1000),
    "flux_dev_1024x1024": (flux_dev(flux_mu(1024, 1024)), 10000),
    "flux_dev_512x768": (flux_dev(flux_mu(512, 768)), 10000),
}


def graph_model(name: str) -> GaussianFlowModel:
    """The model as a graph would set it up: AuraFlow and Flux dev through their ModelSampling nodes."""
    model = GaussianFlowModel(torch.zeros(4, 2, 2), torch.ones(4, 2, 2), DiscreteFlow(shift=1.0))
    if name == "auraflow":
        return ModelSamplingAuraFlow().patch_aura(model, 1.73)[0]
    if name.startswith("flux_dev"):
        width, height = (int(v) for v in name.removeprefix("flux_dev_").split("x"))
        return ModelSamplingFlux().patch(model, 1.15, 0.5, width, height)[0]
    return model


def expected_sigmas(
    scheduler: str, sigma_of: Callable[[np.ndarray], np.ndarray], size: int, steps: int
) -> np.ndarray:
    table = sigma_of(np.arange(1, size + 1) / size)
    sigma_min, sigma_max = table[0], table[-1]
    if scheduler == "simple":
        picked = [table[-(1 + int(i * size / steps))] for i in range(steps)]
    elif scheduler == "sgm_uniform":
        picked = sigma_of(np.linspace(sigma_max, sigma_min, steps + 1)[:-1])
    elif scheduler == "normal":
        picked = sigma_of(np.linspace(sigma_max, sigma_min, steps))
    elif scheduler == "karras":
        ramp = np.linspace(0, 1, steps)
        picked = (sigma_max ** (1 / 7) + ramp * (sigma_min ** (1 / 7) - sigma_max ** (1 / 7))) ** 7
    elif scheduler == "exponential":
        picked = np.exp(np.linspace(math.log(sigma_max), math.log(sigma_min), steps))
    elif scheduler == "ddim_uniform":
        picked = table[1 :: size // steps][::-1]
    elif scheduler == "beta":
        indices = np.rint(
            scipy.stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), 0.6, 0.6) * (size - 1)
        )
        picked = [table[int(index)] for k, index in enumerate(indices) if k == 0 or index != indices[k - 1]]
    elif scheduler == "linear_quadratic":
        picked = (1 - mochi_noise_levels(steps)[:-1]) * sigma_max
    elif scheduler == "kl_optimal":
        a = np.arange(steps) / (steps - 1)
        picked = np.tan(a * math.atan(sigma_min) + (1 - a) * math.atan(sigma_max))
    return np.append(np.asarray(picked, dtype=np.float64), 0.0)


def mochi_noise_levels(steps: int, threshold: float = 0.025) -> np.ndarray:
    """Noise level per step: linear from 0 to `threshold` over the first half, then the quadratic that
    continues it with the same slope and reaches 1 at the end."""
    linear_steps = steps // 2
    slope = threshold / linear_steps
    # q(i) = a i^2 + b i + c with q(L) = threshold, q'(L) = slope, q(steps) = 1.
    a, b, c = np.linalg.solve(
        [[linear_steps**2, linear_steps, 1], [2 * linear_steps, 1, 0], [steps**2, steps, 1]],
        [threshold, slope, 1.0],
    )
    i = np.arange(steps + 1)
    return np.where(i < linear_steps, i * slope, a * i**2 + b * i + c)


@pytest.mark.parametrize("steps", [4, 20, 28])
@pytest.mark.parametrize("scheduler", BasicScheduler.INPUT_TYPES()["required"]["scheduler"][0])
@pytest.mark.parametrize("model_name", MODELS)
def test_scheduler_sigmas_match_the_closed_form(model_name: str, scheduler: str, steps: int) -> None:
    sigma_of, size = MODELS[model_name]
    sigmas = BasicScheduler().get_sigmas(graph_model(model_name), scheduler, steps, 1.0)[0]
    # BasicScheduler keeps at most steps + 1 sigmas (ddim_uniform's stride can give one more).
    expected = expected_sigmas(scheduler, sigma_of, size, steps)[-(steps + 1) :]
    assert sigmas.dtype == torch.float32
    np.testing.assert_allclose(sigmas.numpy(), expected, rtol=2e-6, atol=1e-6)


def test_the_nine_schedulers_in_comfyui_order() -> None:
    assert BasicScheduler.INPUT_TYPES()["required"]["scheduler"][0] == [
        "simple",
        "sgm_uniform",
        "karras",
        "exponential",
        "ddim_uniform",
        "beta",
        "normal",
        "linear_quadratic",
        "kl_optimal",
    ]


def test_flux_dev_shift_depends_on_resolution() -> None:
    """Flux dev runs at mu = max_shift at 1024x1024; a smaller image gets less shift: sigmas fall sooner."""
    large = graph_model("flux_dev_1024x1024").model_sampling
    small = graph_model("flux_dev_512x768").model_sampling
    assert large.mu == pytest.approx(1.15)
    assert small.mu == pytest.approx(0.5 + (1536 - 256) * 0.65 / 3840)
    assert len(large.sigmas) == 10000
    assert large.percent_to_sigma(0.5) > small.percent_to_sigma(0.5)


@pytest.mark.parametrize("denoise", [0.3, 0.5, 0.75])
def test_partial_denoise_keeps_the_tail_of_a_longer_schedule(denoise: float) -> None:
    model = graph_model("auraflow")
    steps = 10
    full = BasicScheduler().get_sigmas(model, "simple", int(steps / denoise), 1.0)[0]
    partial = BasicScheduler().get_sigmas(model, "simple", steps, denoise)[0]
    assert len(partial) == steps + 1
    assert torch.equal(partial, full[-(steps + 1) :])


def test_zero_denoise_samples_nothing() -> None:
    assert BasicScheduler().get_sigmas(graph_model("auraflow"), "simple", 10, 0.0)[0].numel() == 0


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_ksampler_drops_the_penultimate_sigma_for_dpm2_and_unipc(sampler: str) -> None:
    ms = graph_model("auraflow").model_sampling
    sigmas = ksampler_sigmas(ms, sampler, "simple", 8)
    if sampler in {"dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"}:
        nine_steps = BasicScheduler().get_sigmas(graph_model("auraflow"), "simple", 9, 1.0)[0]
        assert torch.equal(sigmas, torch.cat([nine_steps[:-2], nine_steps[-1:]]))
    else:
        assert torch.equal(sigmas, BasicScheduler().get_sigmas(graph_model("auraflow"), "simple", 8, 1.0)[0])
    assert len(sigmas) == 9
