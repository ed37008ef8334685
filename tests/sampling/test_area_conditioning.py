"""Area, mask and strength conditioning while sampling, with ComfyUI's semantics, on a model whose x0
prediction is pointwise (prompt shift + x / 2), so every combined prediction has a closed form: at each
cell, the weighted mean of the shifts of the entries covering it (weights: strength, mask, edge ramps)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from engine.diffusion.protocols import DenoiseMaskFunction, ModelInputs
from engine.diffusion.sampling.guiders import BasicGuider, CFGGuider
from engine.diffusion.sampling.model_sampling import DiscreteFlow, FlowModelSampling
from engine.nodes.conditioning_ops import (
    ConditioningSetArea,
    ConditioningSetAreaPercentage,
    ConditioningSetAreaStrength,
    ConditioningSetMask,
)
from tests.sampling.analytic import IDENTITY, Forward, prompt

SHAPE = (2, 4, 32, 32)
SIGMA = torch.full((2,), 0.6)


@dataclass
class PointwiseModel:
    """A DiffusionModel predicting x0 = shift + x / 2 at every cell, the shift being the conditioning's mean
    token value; any crop of any size can be run, and the model records what it was given."""

    model_sampling: FlowModelSampling = field(default_factory=lambda: DiscreteFlow(shift=1.0))
    latent_format = IDENTITY
    forwards: list[Forward] = field(default_factory=list)
    denoise_mask_function: DenoiseMaskFunction | None = None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def clone(self) -> PointwiseModel:
        return self

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        self.forwards.append(Forward(x.clone(), sigma.clone(), inputs))
        shift = inputs.context.mean(dim=(1, 2)).reshape(-1, 1, 1, 1)
        x0 = shift + x / 2
        return (x - x0) / sigma.reshape(-1, 1, 1, 1)


def latent() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))


def ramp(length: int, start: bool, end: bool, cells: int) -> torch.Tensor:
    """ComfyUI's edge weights along one side of an area: (t + 1) / cells over `cells` from each inner edge."""
    weights = torch.ones(length)
    steps = torch.arange(1, cells + 1) / cells
    if start:
        weights[:cells] *= steps
    if end:
        weights[length - cells :] *= steps.flip(0)
    return weights


def area_weights(height: int, width: int, top: int, left: int, size: int = 32) -> torch.Tensor:
    """The [size, size] weight map of an area entry (0 outside the area)."""
    rows = ramp(height, top != 0, top + height < size, min(8, height // 4))
    columns = ramp(width, left != 0, left + width < size, min(8, width // 4))
    weights = torch.zeros(size, size)
    weights[top : top + height, left : left + width] = rows[:, None] * columns[None, :]
    return weights


def set_area(
    conditioning: list[list[object]], width: int, height: int, x: int, y: int, strength: float = 1.0
):
    return ConditioningSetArea().append(conditioning, width, height, x, y, strength)[0]


def predict(guider: CFGGuider, x: torch.Tensor) -> torch.Tensor:
    return guider.denoiser(SHAPE, keep_uncond=False)(x, SIGMA)


def test_an_area_prompt_blends_into_the_whole_image_prompt_with_ramped_edges() -> None:
    """A 128x128-pixel area at (64, 64) is 16x16 cells at (8, 8): its edges ramp over 16 // 4 = 4 cells."""
    model, x = PointwiseModel(), latent()
    positive = prompt(0.5) + set_area(prompt(0.1), 128, 128, 64, 64)
    guided = predict(BasicGuider(model, positive), x)
    weights = area_weights(16, 16, 8, 8)
    expected = x / 2 + (0.5 + 0.1 * weights) / (1 + weights)
    torch.testing.assert_close(guided, expected)
    assert [tuple(f.x.shape) for f in model.forwards] == [(2, 4, 32, 32), (2, 4, 16, 16)]
    assert torch.equal(model.forwards[1].x, x[..., 8:24, 8:24])


def test_an_area_on_the_latents_border_does_not_ramp_there() -> None:
    model, x = PointwiseModel(), latent()
    positive = prompt(0.5) + set_area(prompt(0.1), 256, 64, 0, 0)
    guided = predict(BasicGuider(model, positive), x)
    weights = area_weights(8, 32, 0, 0)
    assert torch.equal(weights[0], torch.ones(32))
    torch.testing.assert_close(guided, x / 2 + (0.5 + 0.1 * weights) / (1 + weights))


def test_cells_no_entry_covers_predict_zero() -> None:
    """ComfyUI divides 0 by its 1e-37 starting count there."""
    model, x = PointwiseModel(), latent()
    guided = predict(BasicGuider(model, set_area(prompt(0.1), 128, 128, 64, 64)), x)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[8:24, 8:24] = True
    torch.testing.assert_close(guided[..., inside], (x / 2 + 0.1)[..., inside])
    assert torch.equal(guided[..., ~inside], torch.zeros_like(guided[..., ~inside]))


def test_an_area_past_the_edge_is_cut_there() -> None:
    model, x = PointwiseModel(), latent()
    positive = prompt(0.5) + set_area(prompt(0.1), 512, 512, 192, 128)
    guided = predict(BasicGuider(model, positive), x)
    assert tuple(model.forwards[1].x.shape) == (2, 4, 16, 8)
    weights = area_weights(16, 8, 16, 24)
    torch.testing.assert_close(guided, x / 2 + (0.5 + 0.1 * weights) / (1 + weights))


def test_an_area_outside_the_latent_is_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        predict(BasicGuider(PointwiseModel(), set_area(prompt(0.1), 64, 64, 512, 0)), latent())


def test_a_percentage_area_is_resolved_against_the_latent() -> None:
    model, x = PointwiseModel(), latent()
    area = ConditioningSetAreaPercentage().append(prompt(0.1), 0.5, 0.5, 0.25, 0.25, 1.0)[0]
    guided = predict(BasicGuider(model, prompt(0.5) + area), x)
    weights = area_weights(16, 16, 8, 8)
    torch.testing.assert_close(guided, x / 2 + (0.5 + 0.1 * weights) / (1 + weights))


def test_strength_weights_the_average() -> None:
    model, x = PointwiseModel(), latent()
    strong = ConditioningSetAreaStrength().append(prompt(0.5), 3.0)[0]
    guided = predict(BasicGuider(model, strong + prompt(0.1)), x)
    torch.testing.assert_close(guided, x / 2 + (3 * 0.5 + 0.1) / 4)


def test_a_mask_weights_its_prompt_where_it_is_resized_to_the_latent() -> None:
    """A 256x256-pixel mask, left half 1, right half 0 (resized to 32x32 cells it stays a step)."""
    model, x = PointwiseModel(), latent()
    mask = torch.zeros(1, 256, 256)
    mask[:, :, :128] = 1.0
    masked = ConditioningSetMask().append(prompt(0.1), mask, "default", 0.5)[0]
    guided = predict(BasicGuider(model, prompt(0.5) + masked), x)
    torch.testing.assert_close(guided[..., :16], x[..., :16] / 2 + (0.5 + 0.1 * 0.5) / 1.5)
    torch.testing.assert_close(guided[..., 16:], x[..., 16:] / 2 + 0.5)
    assert all(tuple(f.x.shape[2:]) == (32, 32) for f in model.forwards)


def test_mask_bounds_run_the_model_on_the_masks_bounding_box_of_at_least_8_cells() -> None:
    model, x = PointwiseModel(), latent()
    mask = torch.zeros(32, 32)
    mask[10:14, 4:6] = 1.0
    masked = ConditioningSetMask().append(prompt(0.1), mask, "mask bounds", 1.0)[0]
    guided = predict(BasicGuider(model, prompt(0.5) + masked), x)
    assert torch.equal(model.forwards[1].x, x[..., 10:18, 4:12])
    weights = torch.zeros(32, 32)
    weights[10:14, 4:6] = 1.0
    torch.testing.assert_close(guided, x / 2 + (0.5 + 0.1 * weights) / (1 + weights))


def test_cfg_gives_an_area_prompt_a_negative_partner_on_the_same_crop() -> None:
    """The negative has no area entry, so ComfyUI adds one: the negative prompt run on the area's crop
    (batched with the positive area entry), so the uncond there averages two negative predictions."""
    model, x = PointwiseModel(), latent()
    positive = prompt(0.5) + set_area(prompt(0.1), 128, 128, 64, 64)
    guided = predict(CFGGuider(model, positive, prompt(-0.2), 4.0), x)
    shapes = [
        (tuple(f.x.shape), sorted(f.inputs.context.mean(dim=(1, 2)).unique().tolist()))
        for f in model.forwards
    ]
    assert shapes == [
        ((4, 4, 32, 32), pytest.approx([-0.2, 0.5])),
        ((4, 4, 16, 16), pytest.approx([-0.2, 0.1])),
    ]
    weights = area_weights(16, 16, 8, 8)
    cond = x / 2 + (0.5 + 0.1 * weights) / (1 + weights)
    uncond = x / 2 - 0.2
    torch.testing.assert_close(guided, uncond + (cond - uncond) * 4.0)


def test_an_area_the_other_prompt_already_has_gets_no_partner() -> None:
    model, x = PointwiseModel(), latent()
    positive = prompt(0.5) + set_area(prompt(0.1), 128, 128, 64, 64)
    negative = prompt(-0.2) + set_area(prompt(-0.3), 128, 128, 64, 64)
    predict(CFGGuider(model, positive, negative, 4.0), x)
    assert [f.x.shape[0] for f in model.forwards] == [4, 4]


def test_the_partner_comes_from_the_smallest_enclosing_area() -> None:
    """Negative entries: the whole image (-0.2) and a 24x24-cell area (-0.3) enclosing the positive's
    16x16 area: the partner takes -0.3, and the 24x24 area gets a positive partner from the whole image."""
    model, x = PointwiseModel(), latent()
    positive = prompt(0.5) + set_area(prompt(0.1), 128, 128, 64, 64)
    negative = prompt(-0.2) + set_area(prompt(-0.3), 192, 192, 32, 32)
    predict(CFGGuider(model, positive, negative, 4.0), x)
    by_size = {}
    for forward in model.forwards:
        shifts = forward.inputs.context.mean(dim=(1, 2)).unique().tolist()
        by_size[tuple(forward.x.shape[2:])] = sorted(round(s, 4) for s in shifts)
    assert by_size == {(32, 32): [-0.2, 0.5], (16, 16): [-0.3, 0.1], (24, 24): [-0.3, 0.5]}
