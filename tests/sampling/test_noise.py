"""Where a seed's random numbers go: ComfyUI's rules, so a seed gives the same image here as there."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
import torch
import torchsde

from engine.diffusion.sampling.guiders import BasicGuider
from engine.diffusion.sampling.noise import RandomNoise
from engine.diffusion.sampling.sampler import sampler_object
from engine.nodes.sampling import DisableNoise, KSampler
from engine.nodes.sampling import RandomNoise as RandomNoiseNode
from tests.comfy_fixtures import index, tensors
from tests.sampling.analytic import GaussianFlowModel, prompt


def reference_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        return torch.randn(shape, generator=torch.manual_seed(seed))


PREPARED = index("noise")["index"]["prepare_noise"]


@pytest.mark.parametrize("case", sorted(PREPARED))
def test_initial_noise_is_comfyuis_prepare_noise(case: str) -> None:
    """Seeds up to 2^63 - 1 and three latent shapes, against ComfyUI's recorded prepare_noise."""
    recorded = PREPARED[case]
    shape = tuple(recorded["shape"])
    latent = {"samples": torch.zeros(shape)}
    noise = RandomNoiseNode().get_noise(recorded["seed"])[0].generate_noise(latent)
    expected = tensors("noise")[recorded["stored_as"]].flatten()[: recorded["n"]].reshape(shape)
    assert torch.equal(noise, expected)
    assert hashlib.sha256(noise.numpy().astype("<f4").tobytes()).hexdigest() == recorded["sha256_float32_le"]


@pytest.mark.parametrize("seed", [2**64 - 1, -1, -(2**63)])
def test_seeds_at_the_ends_of_the_range_give_comfyuis_noise(seed: int) -> None:
    noise = RandomNoise(seed).generate_noise({"samples": torch.zeros(1, 4, 8, 8)})
    assert torch.equal(noise, tensors("noise")[f"extra_seeds/{seed}"])


def test_batch_index_gives_each_sample_the_noise_it_has_alone() -> None:
    """Sample k of a batch gets the k-th per-sample draw: regenerating one image of a batch reproduces it."""
    noise = RandomNoise(7).generate_noise({"samples": torch.zeros(2, 4, 8, 8), "batch_index": [3, 1]})
    assert torch.equal(noise, tensors("noise")["batch_index/seed7/3,1"])


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
    """2^64 - 1 starts from ComfyUI's noise for it; its step noise, seeded with seed + 1, wraps to seed 0
    (ComfyUI raises "Overflow when unpacking long long" for 2^64, as the noise fixture records).
    lcm re-noises its first x0 estimate with the first step draw: sigma_1 * n + (1 - sigma_1) * x0."""
    model = make_model((4, 8, 8))
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    out = KSampler().sample(model, 2**64 - 1, 2, 1.0, "lcm", "simple", prompt(0.0), prompt(0.0), latent)
    initial = tensors("noise")[f"extra_seeds/{2**64 - 1}"]
    assert torch.equal(model.forwards[0].x, initial)
    first_x0 = model.denoise(initial, torch.tensor([1.0]))
    step_noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    sigma_1 = model.forwards[1].sigma
    torch.testing.assert_close(model.forwards[1].x, sigma_1 * step_noise + (1 - sigma_1) * first_x0)
    assert torch.isfinite(out[0]["samples"]).all()
