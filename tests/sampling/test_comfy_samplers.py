"""Every sampler against ComfyUI's own runs (comfy-fixtures/samplers): the same KSampler graph, the same
analytic model, the same seed, so the result must be ComfyUI's to float32 rounding.

ComfyUI ran `EmptySD3LatentImage -> KSampler(seed 7, 6 steps)` on Flux schnell's model sampling with
its network replaced by the exact posterior mean of Gaussian data (the problem of analytic.py), for all
44 samplers under the simple and karras schedulers at cfg 1 and the simple one at cfg 3.5, plus three
batch-of-two runs. Besides the final latent, the recording lists every model call (batch rows, sigma),
which pins down the schedule, the steps a sampler takes and when the negative prompt is evaluated.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from engine.diffusion.latent_formats import FLUX
from engine.diffusion.sampling.model_sampling import DiscreteFlow
from engine.diffusion.sampling.sample import ksample
from engine.diffusion.sampling.samplers import SAMPLER_NAMES
from tests.comfy_fixtures import index, tensors
from tests.sampling.analytic import GaussianFlowModel, prompt

RUNS: dict[str, dict[str, Any]] = index("samplers")["runs"]
CONTEXTS = {1.0: (0.0, 0.0), 3.5: (0.4, -0.2)}
"""The recorded conditioning: (positive, negative) context value at each cfg (samplers.json)."""
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}
"""Float32 rounding over six steps; uni_pc and uni_pc_bh2 under karras differ most (about 2e-4 abs
on values up to 5)."""


def run_like_comfy(name: str) -> tuple[torch.Tensor, GaussianFlowModel]:
    run = RUNS[name]
    recorded = tensors("samplers")
    model = GaussianFlowModel(recorded["data/mu"], recorded["data/std"], DiscreteFlow(shift=1.0), FLUX)
    positive, negative = (prompt(value, pooled_output=torch.zeros(1, 8)) for value in CONTEXTS[run["cfg"]])
    latent = {"samples": torch.zeros_like(recorded[f"latent_image/b{run['batch']}"])}
    result = ksample(
        model,
        run["seed"],
        run["steps"],
        run["cfg"],
        run["sampler"],
        run["scheduler"],
        positive,
        negative,
        latent,
    )
    return result["samples"], model


def test_every_sampler_of_comfyui_was_recorded() -> None:
    assert index("samplers")["sampler_names"] == SAMPLER_NAMES
    assert {run["sampler"] for run in RUNS.values()} == set(SAMPLER_NAMES)


@pytest.mark.parametrize("name", sorted(RUNS))
@pytest.mark.filterwarnings("ignore:Should have")
def test_sampler_gives_comfyuis_latent_through_comfyuis_model_calls(name: str) -> None:
    run = RUNS[name]
    latent, model = run_like_comfy(name)
    recorded = tensors("samplers")
    # The node's output where it was stored, else ComfyUI's final through its Flux process_latent_out.
    flux = index("sigmas")["samplings"]["flux_schnell"]
    out_of_final = recorded[f"{name}/final"] / flux["latent_scale_factor"] + flux["latent_shift_factor"]
    expected = recorded.get(f"{name}/latent", out_of_final)
    calls = [(forward.x.shape[0], float(forward.sigma.flatten()[0])) for forward in model.forwards]
    recorded_calls = [(call["rows"], call["sigma"]) for call in run["model_calls"]]
    assert [rows for rows, _ in calls] == [rows for rows, _ in recorded_calls]
    torch.testing.assert_close(
        torch.tensor([sigma for _, sigma in calls]), torch.tensor([sigma for _, sigma in recorded_calls])
    )
    torch.testing.assert_close(latent, expected, **TOLERANCE)
