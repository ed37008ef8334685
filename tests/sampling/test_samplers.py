"""Every sampler on the analytic problem (analytic.py): Gaussian data under AuraFlow's shift, simple schedule.

Deterministic samplers must land on the exact ODE solution mu + std * noise: within an RMS error of
0.075 data standard deviations at 30 steps (a first-order sampler's error there is about 0.06; higher
orders are far below), and closer at 60 steps, which a solver of the wrong ODE would not be.
dpm_fast and dpm_adaptive stop at the last non-zero sigma, as in ComfyUI, so they are held to the exact
solution there.

Stochastic samplers must reproduce the data distribution: with x standardised per element as
(x - mu) / std over 8192 elements at 50 steps, mean within 0.05 of 0 (about 4 standard errors) and
standard deviation within 0.08 of 1 (first-order ancestral sampling is about 0.07 low at 50 steps).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import pytest
import torch

from engine.diffusion.sampling.guiders import CFGGuider
from engine.diffusion.sampling.sample import ksampler_sigmas
from engine.diffusion.sampling.sampler import sampler_object
from engine.diffusion.sampling.samplers import SAMPLER_NAMES
from engine.diffusion.sampling.samplers.multistep import _ipndm_v_weights
from tests.sampling.analytic import GaussianFlowModel, prompt

STOCHASTIC = {
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "exp_heun_2_x0_sde",
    "dpm_2_ancestral",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
}
NOT_FLOW_SAMPLERS = {
    "ddpm",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "dpmpp_2s_ancestral_cfg_pp",
    "lcm",
}
"""Stochastic, but not samplers of a flow model's distribution, in ComfyUI and so here. ddpm and the three
others renoise with the variance-exploding split whatever the model; lcm assumes a consistency-distilled
model. Their per-element spread comes out 0.68x (lcm) to 1.8x (res_multistep_ancestral) the data's."""
DETERMINISTIC = [name for name in SAMPLER_NAMES if name not in STOCHASTIC | NOT_FLOW_SAMPLERS]
STOPS_EARLY = {"dpm_fast", "dpm_adaptive"}
SEED = 1234


def sample(
    model: GaussianFlowModel, name: str, steps: int, step_seed: int = SEED, **options: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """(result, initial noise) of a KSampler-style run without guidance (cfg 1, one prompt on both sides).

    The initial noise always comes from SEED; `step_seed` seeds the per-step noise.
    """
    noise = torch.randn((2, *model.mu.shape), generator=torch.Generator().manual_seed(SEED))
    sigmas = ksampler_sigmas(model.model_sampling, name, "simple", steps)
    guider = CFGGuider(model, prompt(0.0), prompt(0.0), cfg=1.0)
    sampler = sampler_object(name, **options)
    return guider.sample(noise, torch.zeros_like(noise), sampler, sigmas, seed=step_seed), noise


def rms_error(model: GaussianFlowModel, name: str, steps: int) -> float:
    result, noise = sample(model, name, steps)
    end = 0.0
    if name in STOPS_EARLY:
        end = float(ksampler_sigmas(model.model_sampling, name, "simple", steps)[-2])
    return float(((result - model.ode_solution(noise, end)) / model.std).pow(2).mean().sqrt())


def test_all_44_samplers_in_comfyui_order() -> None:
    assert len(SAMPLER_NAMES) == len(set(SAMPLER_NAMES)) == 44
    assert SAMPLER_NAMES[:4] == ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp"]
    assert SAMPLER_NAMES[-3:] == ["ddim", "uni_pc", "uni_pc_bh2"]
    assert len(DETERMINISTIC) + len(STOCHASTIC) + len(NOT_FLOW_SAMPLERS) == 44


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_sampler_lands_on_the_exact_ode_solution(
    name: str, make_model: Callable[..., GaussianFlowModel]
) -> None:
    model = make_model()
    error_30 = rms_error(model, name, 30)
    assert error_30 < 0.075
    if name != "dpm_adaptive":
        assert rms_error(model, name, 60) < error_30 / 1.5


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
@pytest.mark.filterwarnings("ignore:Should have")
def test_stochastic_sampler_reproduces_the_data_distribution(
    name: str, make_model: Callable[..., GaussianFlowModel]
) -> None:
    model = make_model()
    result, _ = sample(model, name, 50)
    standardised = (result - model.mu) / model.std
    assert abs(float(standardised.mean())) < 0.05
    assert abs(float(standardised.std()) - 1) < 0.08


@pytest.mark.parametrize("name", sorted(NOT_FLOW_SAMPLERS))
def test_samplers_foreign_to_flow_models_still_centre_on_the_data(
    name: str, make_model: Callable[..., GaussianFlowModel]
) -> None:
    """Only a sanity bound at 50 steps: their exact results (spread included) are held to ComfyUI's
    recorded runs in test_comfy_samplers.py."""
    model = make_model()
    result, _ = sample(model, name, 50)
    assert torch.isfinite(result).all()
    assert abs(float(((result - model.mu) / model.std).mean())) < 0.05


@pytest.mark.parametrize("name", SAMPLER_NAMES)
@pytest.mark.filterwarnings("ignore:Should have")
def test_every_sampler_is_reproducible_for_a_seed(
    name: str, make_model: Callable[..., GaussianFlowModel]
) -> None:
    model = make_model((4, 8, 8))
    first, _ = sample(model, name, 6)
    again, _ = sample(model, name, 6)
    assert torch.equal(first, again)
    if name in STOCHASTIC | NOT_FLOW_SAMPLERS:
        assert not torch.equal(first, sample(model, name, 6, step_seed=SEED + 1)[0])


@pytest.mark.parametrize(
    ("cfg_pp", "plain"),
    [
        ("euler_cfg_pp", "euler"),
        ("dpmpp_2m_cfg_pp", "dpmpp_2m"),
        ("res_multistep_cfg_pp", "res_multistep"),
        ("gradient_estimation_cfg_pp", "gradient_estimation"),
    ],
)
def test_cfg_pp_without_guidance_is_its_plain_sampler(
    cfg_pp: str, plain: str, make_model: Callable[..., GaussianFlowModel]
) -> None:
    """With positive = negative the unguided prediction is the guided one, so CFG++ must change nothing."""
    model = make_model((4, 8, 8))
    torch.testing.assert_close(
        sample(model, cfg_pp, 12)[0], sample(model, plain, 12)[0], rtol=1e-4, atol=1e-5
    )


def test_er_sde_with_a_linear_noise_scale_is_the_probability_flow_ode(
    make_model: Callable[..., GaussianFlowModel],
) -> None:
    """phi(lambda) = lambda leaves no room for noise (Cui et al.: lambda_t^2 - lambda_s^2 r^2 = 0), so er_sde
    must then land on the exact ODE solution like a deterministic third-order solver, whatever the seed
    (up to the noise that the rounding of that difference lets through: about 1e-3 here)."""
    model = make_model()

    def linear(lam: torch.Tensor) -> torch.Tensor:
        return lam

    result, noise = sample(model, "er_sde", 30, step_seed=1, noise_scaler=linear)
    error = float(((result - model.ode_solution(noise)) / model.std).pow(2).mean().sqrt())
    assert error < 0.01
    other_seed, _ = sample(model, "er_sde", 30, step_seed=2, noise_scaler=linear)
    torch.testing.assert_close(other_seed, result, rtol=0, atol=0.01)


def test_dpm_adaptive_names_the_order_it_refuses(make_model: Callable[..., GaussianFlowModel]) -> None:
    with pytest.raises(ValueError, match=r"dpm_adaptive: order must be 2 or 3, got 4"):
        sample(make_model((4, 8, 8)), "dpm_adaptive", 6, order=4)


def test_ipndm_v_weights_are_adams_bashforth_only_where_comfyui_makes_them_so() -> None:
    """Closed forms, in exact fractions: variable-step AB2 at order 2; AB3 (23, -16, 5) / 12 at order 3 on
    equal steps but c2 = 1/2 - h^2 / (6 h1 (h1 + h2)) on uneven ones (AB3's would be h (2h + 3 h1) / ...);
    (57, -65, 43, -11) / 24 at order 4 on equal steps, not AB4's (55, -59, 37, -9) / 24."""
    h, h1, h2, h3 = Fraction(3), Fraction(5), Fraction(2), Fraction(7)
    assert _ipndm_v_weights([h, h1], 2) == [1 + h / (2 * h1), -h / (2 * h1)]
    equal = [Fraction(1)] * 4
    assert _ipndm_v_weights(equal, 3) == [Fraction(23, 12), Fraction(-16, 12), Fraction(5, 12)]
    assert _ipndm_v_weights(equal, 4) == [Fraction(k, 24) for k in (57, -65, 43, -11)]
    c2 = Fraction(1, 2) - h**2 / (6 * h1 * (h1 + h2))
    second_difference = [c2, -(1 + h1 / h2) * c2, c2 * h1 / h2]
    ab2 = [1 + h / (2 * h1), -h / (2 * h1), 0]
    assert _ipndm_v_weights([h, h1, h2], 3) == [a + b for a, b in zip(ab2, second_difference, strict=True)]
    assert sum(_ipndm_v_weights([h, h1, h2, h3], 4)) != 1
