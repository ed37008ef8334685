"""Where a seed's random numbers go: ComfyUI's rules, so a seed gives the same image here as there."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchsde

from engine.diffusion.sampling.guiders import BasicGuider
from engine.diffusion.sampling.noise import RandomNoise
from engine.diffusion.sampling.sampler import sampler_object
from engine.nodes.sampling import DisableNoise, KSampler
from engine.nodes.sampling import RandomNoise as RandomNoiseNode
from tests.sampling.analytic import GaussianFlowModel, prompt


def reference_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        return torch.randn(shape, generator=torch.manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1, 123456789, 2**64 - 1])
def test_initial_noise_is_one_cpu_draw_of_the_whole_batch(seed: int) -> None:
    latent = {"samples": torch.zeros(3, 16, 8, 8)}
    noise = RandomNoiseNode().get_noise(seed)[0].generate_noise(latent)
    assert torch.equal(noise, reference_noise((3, 16, 8, 8), seed))


def test_batch_index_gives_each_sample_the_noise_it_has_alone() -> None:
    """Sample k of a batch gets the k-th per-sample draw: regenerating one image of a batch reproduces it."""
    with torch.random.fork_rng(devices=[]):
        generator = torch.manual_seed(7)
        draws = [torch.randn((1, 4, 8, 8), generator=generator) for _ in range(4)]
    noise = RandomNoise(7).generate_noise({"samples": torch.zeros(2, 4, 8, 8), "batch_index": [3, 1]})
    assert torch.equal(noise, torch.cat([draws[3], draws[1]]))


def test_disabled_noise_is_zero_but_still_seeds_steps_with_zero() -> None:
    noise = DisableNoise().get_noise()[0]
    assert noise.seed == 0
    assert torch.count_nonzero(noise.generate_noise({"samples": torch.ones(1, 4, 8, 8)})) == 0


def test_ksampler_starts_from_the_seeds_noise(make_model: Callable[..., GaussianFlowModel]) -> None:
    model = make_model((4, 8, 8))
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    KSampler().sample(model, 42, 1, 1.0, "euler", "simple", prompt(0.0), prompt(0.0), latent)
    assert torch.equal(model.forwards[0].x, reference_noise((2, 4, 8, 8), 42))


def test_ancestral_step_noise_comes_from_a_cpu_generator_seeded_with_seed_plus_one(
    make_model: Callable[..., GaussianFlowModel],
) -> None:
    """lcm re-noises its first x0 estimate with the first per-step draw: sigma_1 * n + (1 - sigma_1) * x0."""
    model = make_model((4, 8, 8))
    seed = 99
    sigmas = torch.tensor([1.0, 0.6, 0.0])
    noise = reference_noise((1, 4, 8, 8), seed)
    BasicGuider(model, prompt(0.0)).sample(
        noise, torch.zeros(1, 4, 8, 8), sampler_object("lcm"), sigmas, seed=seed
    )
    first_x0 = model.denoise(noise, torch.tensor([1.0]))
    step_noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(seed + 1))
    torch.testing.assert_close(model.forwards[1].x, 0.6 * step_noise + 0.4 * first_x0)


@pytest.mark.filterwarnings("ignore:Should have")
def test_sde_noise_is_a_brownian_tree_seeded_with_the_seed(
    make_model: Callable[..., GaussianFlowModel],
) -> None:
    """dpmpp_2m_sde's first step adds sigma_1 * sqrt(1 - e^(-2h)) times the tree's normalised increment."""
    model = make_model((4, 8, 8))
    seed = 5
    sigmas = torch.tensor([0.8, 0.5, 0.0])
    noise = reference_noise((1, 4, 8, 8), seed)
    latent = torch.zeros(1, 4, 8, 8)
    BasicGuider(model, prompt(0.0)).sample(noise, latent, sampler_object("dpmpp_2m_sde"), sigmas, seed=seed)
    tree = torchsde.BrownianTree(torch.tensor(0.5), torch.zeros(1, 4, 8, 8), torch.tensor(0.8), entropy=seed)
    unit_noise = -tree(torch.tensor(0.5), torch.tensor(0.8)) / 0.3**0.5
    x = 0.8 * noise
    lambda_s, lambda_t = torch.tensor(0.2 / 0.8).log(), torch.tensor(0.5 / 0.5).log()
    h = lambda_t - lambda_s
    expected = 0.5 / 0.8 * (-h).exp() * x + 0.5 * (-2 * h).expm1().neg() * model.denoise(
        x, torch.tensor([0.8])
    )
    expected = expected + unit_noise * 0.5 * (-2 * h).expm1().neg().sqrt()
    torch.testing.assert_close(model.forwards[1].x, expected)


@pytest.mark.parametrize("name", ["dpmpp_sde", "dpmpp_2m_sde", "dpmpp_2m_sde_heun", "dpmpp_3m_sde"])
@pytest.mark.filterwarnings("ignore:Should have")
def test_gpu_twins_differ_only_in_where_the_tree_lives(
    name: str, make_model: Callable[..., GaussianFlowModel]
) -> None:
    model = make_model((4, 8, 8))
    sigmas = torch.tensor([1.0, 0.7, 0.4, 0.2, 0.0])
    noise = reference_noise((1, 4, 8, 8), 3)
    latent = torch.zeros(1, 4, 8, 8)
    guider = BasicGuider(model, prompt(0.0))
    on_cpu = guider.sample(noise, latent, sampler_object(name), sigmas, seed=3)
    on_device = guider.sample(noise, latent, sampler_object(f"{name}_gpu"), sigmas, seed=3)
    assert torch.equal(on_cpu, on_device)


def test_the_largest_seed_samples_with_step_noise(make_model: Callable[..., GaussianFlowModel]) -> None:
    model = make_model((4, 8, 8))
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    out = KSampler().sample(
        model, 2**64 - 1, 3, 1.0, "euler_ancestral", "simple", prompt(0.0), prompt(0.0), latent
    )
    assert torch.isfinite(out[0]["samples"]).all()
