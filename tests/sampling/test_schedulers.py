"""Every scheduler's sigmas against ComfyUI's recorded schedules (comfy-fixtures/sigmas).

Six model samplings (AuraFlow at shift 1.73 and 3, Flux schnell, Flux dev at two sizes, SD3 at shift 3),
the nine schedulers and 1 to 50 steps, as three things a graph sees: calculate_sigmas, the
BasicScheduler node at denoise 1 and 0.6, and what the KSampler node hands its sampler (euler, and
uni_pc, which drops the penultimate sigma). Each model is set up as a graph would set it up, through
the ModelSampling nodes ComfyUI's recording used.
"""

from __future__ import annotations

from itertools import product
from typing import Any

import pytest
import torch

from engine.diffusion.sampling.model_sampling import DiscreteFlow
from engine.diffusion.sampling.sample import ksampler_sigmas
from engine.diffusion.sampling.schedulers import calculate_sigmas
from engine.nodes.sampling import BasicScheduler, ModelSamplingAuraFlow, ModelSamplingFlux, ModelSamplingSD3
from tests.comfy_fixtures import index, input_spec, tensors
from tests.sampling.analytic import GaussianFlowModel

RECORDED = index("sigmas")
SAMPLINGS: dict[str, dict[str, Any]] = RECORDED["samplings"]
SCHEDULERS: list[str] = RECORDED["schedulers"]
STEPS: list[int] = RECORDED["steps"]
TOLERANCE = {"rtol": 2e-6, "atol": 1e-6, "equal_nan": True}
"""Float32 rounding; kl_optimal at 1 step is [nan, 0] in ComfyUI, and must be here too."""


def graph_model(sampling: str) -> GaussianFlowModel:
    """The model of a recorded sampling, patched by the same node with the same arguments."""
    model = GaussianFlowModel(torch.zeros(4, 2, 2), torch.ones(4, 2, 2), DiscreteFlow(shift=1.0))
    patch = SAMPLINGS[sampling]["node_patch"]
    if patch is None:
        return model
    node, arguments = patch
    if node == "ModelSamplingAuraFlow":
        return ModelSamplingAuraFlow().patch_aura(model, **arguments)[0]
    if node == "ModelSamplingSD3":
        return ModelSamplingSD3().patch(model, **arguments)[0]
    assert node == "ModelSamplingFlux", node
    return ModelSamplingFlux().patch(model, **arguments)[0]


def assert_recorded(actual: dict[str, torch.Tensor]) -> None:
    """Every computed schedule equals its recording; all mismatches are listed at once."""
    recorded = tensors("sigmas")
    wrong = []
    for key, sigmas in actual.items():
        try:
            assert sigmas.dtype == torch.float32
            torch.testing.assert_close(sigmas, recorded[key], **TOLERANCE)
        except AssertionError as error:
            wrong.append(f"{key}: {sigmas.tolist()} != {recorded[key].tolist()} ({error})")
    assert not wrong, "\n".join(wrong)


CASES = list(product(SAMPLINGS, SCHEDULERS))


@pytest.mark.parametrize(("sampling", "scheduler"), CASES)
def test_calculate_sigmas_is_comfyuis(sampling: str, scheduler: str) -> None:
    ms = graph_model(sampling).model_sampling
    assert_recorded(
        {
            f"calculate_sigmas/{sampling}/{scheduler}/{steps}": calculate_sigmas(ms, scheduler, steps)
            for steps in STEPS
        }
    )


@pytest.mark.parametrize(("sampling", "scheduler"), CASES)
def test_basic_scheduler_node_is_comfyuis(sampling: str, scheduler: str) -> None:
    model = graph_model(sampling)
    assert_recorded(
        {
            f"basic_scheduler/{sampling}/{scheduler}/{steps}/denoise{denoise}": BasicScheduler().get_sigmas(
                model, scheduler, steps, denoise
            )[0]
            for steps, denoise in product(STEPS, (1.0, 0.6))
        }
    )


@pytest.mark.parametrize(("sampling", "scheduler"), CASES)
def test_ksampler_hands_its_sampler_comfyuis_sigmas(sampling: str, scheduler: str) -> None:
    ms = graph_model(sampling).model_sampling
    assert_recorded(
        {
            f"ksampler/{sampling}/{scheduler}/{steps}/{sampler}/denoise{denoise}": ksampler_sigmas(
                ms, sampler, scheduler, steps, denoise
            )
            for steps, sampler, denoise in product(STEPS, ("euler", "uni_pc"), (1.0, 0.6))
        }
    )


def test_model_samplings_match_comfyuis() -> None:
    """The shift (Flux dev's mu from the image size) and the table ends of each patched model."""
    for sampling, recorded in SAMPLINGS.items():
        ms = graph_model(sampling).model_sampling
        expected = recorded["model_sampling"]
        shift = ms.mu if sampling.startswith("flux_dev") else ms.shift
        assert shift == pytest.approx(expected["shift"], rel=1e-12), sampling
        assert len(ms.sigmas) == expected["table_len"], sampling
        assert float(ms.sigmas[0]) == pytest.approx(expected["sigma_min"], rel=1e-6), sampling
        assert float(ms.sigmas[-1]) == pytest.approx(expected["sigma_max"], rel=1e-6), sampling
        assert getattr(ms, "multiplier", 1.0) == expected.get("multiplier", 1.0), sampling


def test_the_scheduler_list_is_comfyuis() -> None:
    comfy = input_spec("BasicScheduler", "scheduler")[0]
    assert BasicScheduler.INPUT_TYPES()["required"]["scheduler"][0] == comfy == SCHEDULERS


def test_zero_denoise_samples_nothing() -> None:
    model = graph_model("auraflow_shift1.73")
    assert BasicScheduler().get_sigmas(model, "simple", 10, 0.0)[0].numel() == 0
