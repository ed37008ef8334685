"""The SIGMAS editing nodes against closed-form answers."""

from __future__ import annotations

import pytest
import torch

from engine.nodes.sigmas import FlipSigmas, ManualSigmas, SetFirstSigma, SplitSigmas, SplitSigmasDenoise

SCHEDULE = torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0])


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("1, 0.5", [1.0, 0.5]),
        ("14.6 7.1;0.02,0", [14.6, 7.1, 0.02, 0.0]),
        ("-1, +2, .5", [-1.0, 2.0, 0.5]),
        ("no numbers", []),
    ],
)
def test_manual_sigmas_reads_every_number(text: str, values: list[float]) -> None:
    (sigmas,) = ManualSigmas().execute(text)
    assert sigmas.dtype == torch.float32
    assert torch.equal(sigmas, torch.tensor(values, dtype=torch.float32))


@pytest.mark.parametrize(
    ("step", "high", "low"),
    [
        (0, [1.0], [1.0, 0.75, 0.5, 0.25, 0.0]),
        (2, [1.0, 0.75, 0.5], [0.5, 0.25, 0.0]),
        (9, SCHEDULE.tolist(), []),
    ],
)
def test_split_sigmas_shares_the_sigma_at_the_split(step: int, high: list[float], low: list[float]) -> None:
    first, second = SplitSigmas().get_sigmas(SCHEDULE, step)
    assert first.tolist() == high and second.tolist() == low


@pytest.mark.parametrize(
    ("denoise", "high", "low"),
    [
        (1.0, [1.0], [1.0, 0.75, 0.5, 0.25, 0.0]),
        (0.5, [1.0, 0.75, 0.5], [0.5, 0.25, 0.0]),
        (0.3, [1.0, 0.75, 0.5, 0.25], [0.25, 0.0]),  # round(4 * 0.3) = 1 step
        (0.0, [], [0.0]),  # ComfyUI's slice [:-0] is empty
    ],
)
def test_split_sigmas_denoise_keeps_the_last_steps(
    denoise: float, high: list[float], low: list[float]
) -> None:
    first, second = SplitSigmasDenoise().get_sigmas(SCHEDULE, denoise)
    assert first.tolist() == high and second.tolist() == low


def test_flip_sigmas_reverses_and_lifts_a_leading_zero() -> None:
    schedule = SCHEDULE.clone()
    (flipped,) = FlipSigmas().get_sigmas(schedule)
    assert torch.allclose(flipped, torch.tensor([0.0001, 0.25, 0.5, 0.75, 1.0]))
    assert torch.equal(schedule, SCHEDULE)
    (empty,) = FlipSigmas().get_sigmas(torch.tensor([]))
    assert empty.numel() == 0


def test_set_first_sigma_changes_a_copy() -> None:
    schedule = SCHEDULE.clone()
    (changed,) = SetFirstSigma().set_first_sigma(schedule, 136.0)
    assert changed.tolist() == [136.0, 0.75, 0.5, 0.25, 0.0]
    assert torch.equal(schedule, SCHEDULE)
