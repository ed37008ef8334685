"""DifferentialDiffusion's per-step mask against the closed form of ComfyUI's rule: a cell is denoised at
a step when its soft mask value is at least the run's remaining progress in model time."""

from __future__ import annotations

import torch

from engine.diffusion.sampling.differential_diffusion import DifferentialMask
from engine.diffusion.sampling.model_sampling import DiscreteFlow
from engine.nodes.differential_diffusion import DifferentialDiffusion
from tests import comfy_fixtures

MASK = torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0]).reshape(1, 1, 1, 5)


def test_the_threshold_falls_from_one_to_zero_along_the_schedule() -> None:
    ms = DiscreteFlow(shift=1.0)
    sigmas = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])
    mask_function = DifferentialMask()
    seen = [mask_function(sigma.reshape(1), MASK, ms, sigmas).flatten().tolist() for sigma in sigmas[:-1]]
    # sigma_to is the model's smallest sigma (0.001), since the schedule ends at 0: threshold
    # (s - 0.001) / (1 - 0.001) is 1, ~0.75, ~0.5, ~0.25 at the four steps.
    assert seen == [
        [0.0, 0.0, 0.0, 0.0, 1.0],
        [0.0, 0.0, 0.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0, 1.0],
        [0.0, 0.0, 1.0, 1.0, 1.0],
    ]


def test_below_full_strength_the_binary_mask_is_blended_with_the_soft_one() -> None:
    ms = DiscreteFlow(shift=1.0)
    sigmas = torch.tensor([1.0, 0.5, 0.0])
    blended = DifferentialMask(strength=0.25)(torch.tensor([0.5]), MASK, ms, sigmas)
    binary = (MASK >= (0.5 - 0.001) / (1 - 0.001)).float()
    assert torch.allclose(blended, 0.25 * binary + 0.75 * MASK)


def test_the_node_patches_a_clone_and_declares_what_comfyui_does() -> None:
    class Model:
        denoise_mask_function = None

        def clone(self) -> Model:
            return Model()

    model = Model()
    (patched,) = DifferentialDiffusion().apply(model, 0.5)  # type: ignore[arg-type]
    assert model.denoise_mask_function is None
    assert patched.denoise_mask_function == DifferentialMask(0.5)
    assert comfy_fixtures.input_spec("DifferentialDiffusion", "strength") == (
        "FLOAT",
        DifferentialDiffusion.INPUT_TYPES()["optional"]["strength"][1],
    )
