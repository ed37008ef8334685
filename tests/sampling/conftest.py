"""Fixtures of the sampling tests: the analytic model (see analytic.py) at a chosen size and sigma shift."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from engine.diffusion.latent_formats import LatentFormat
from engine.diffusion.sampling.model_sampling import DiscreteFlow, FlowModelSampling
from tests.sampling.analytic import IDENTITY, GaussianFlowModel


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """These tensors are small: a second intra-op thread only adds contention on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_model() -> Callable[..., GaussianFlowModel]:
    """Gaussian data with per-element mean in [-1, 1] and std in [0.3, 1], under AuraFlow's sigma shift."""

    def make(
        latent_shape: tuple[int, ...] = (4, 32, 32),
        model_sampling: FlowModelSampling | None = None,
        latent_format: LatentFormat = IDENTITY,
    ) -> GaussianFlowModel:
        generator = torch.Generator().manual_seed(0)
        mu = torch.rand(latent_shape, generator=generator) * 2 - 1
        std = torch.rand(latent_shape, generator=generator) * 0.7 + 0.3
        return GaussianFlowModel(mu, std, model_sampling or DiscreteFlow(shift=1.73), latent_format)

    return make
