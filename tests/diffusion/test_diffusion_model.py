"""The MODEL value: its defaults, cloning, any latent size, residency and out-of-memory behaviour."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from engine.diffusion.latent_formats import FLUX, SDXL
from engine.diffusion.loading import load_checkpoint, load_diffusion_model
from engine.diffusion.model_manager import ModelManager, OutOfMemoryError
from engine.diffusion.protocols import DiffusionModel, ModelInputs
from engine.diffusion.sampling.model_sampling import DiscreteFlow, FluxFlow
from tests.comfy_fixtures import index

GIB = 2**30


def flux_inputs(batch: int = 1) -> ModelInputs:
    return ModelInputs(torch.randn(batch, 7, 32), torch.randn(batch, 64))


@pytest.fixture
def flux_dev(test_models_dir: Path, manager: ModelManager) -> DiffusionModel:
    return load_diffusion_model(
        test_models_dir / "diffusion_models" / "flux1-dev.safetensors", manager=manager
    )


@pytest.fixture
def aura(test_models_dir: Path, manager: ModelManager) -> DiffusionModel:
    path = test_models_dir / "checkpoints" / "aura_flow_0.3.safetensors"
    model, _, _ = load_checkpoint(path, tokenizer_roots=[test_models_dir / "text_encoders"], manager=manager)
    return model


def test_each_family_has_comfyui_default_sampling_and_latent_format(
    test_models_dir: Path, manager: ModelManager, flux_dev: DiffusionModel, aura: DiffusionModel
) -> None:
    schnell = load_diffusion_model(
        test_models_dir / "diffusion_models" / "flux1-schnell.safetensors", manager=manager
    )

    assert isinstance(aura.model_sampling, DiscreteFlow) and aura.model_sampling.shift == 1.73
    assert isinstance(schnell.model_sampling, DiscreteFlow) and schnell.model_sampling.shift == 1.0
    assert isinstance(flux_dev.model_sampling, FluxFlow) and flux_dev.model_sampling.mu == 1.15
    assert (aura.latent_format, schnell.latent_format, flux_dev.latent_format) == (SDXL, FLUX, FLUX)
    samplings = index("sigmas")["samplings"]
    for model, recorded in ((aura, samplings["auraflow_shift1.73"]), (schnell, samplings["flux_schnell"])):
        latent_format = model.latent_format
        assert (latent_format.channels, latent_format.scale_factor, latent_format.shift_factor) == (
            recorded["latent_channels"],
            recorded["latent_scale_factor"],
            recorded["latent_shift_factor"],
        )
    assert schnell.model_sampling.shift == samplings["flux_schnell"]["model_sampling"]["shift"]
    assert flux_dev.device == torch.device("cpu")


def test_a_clone_shares_weights_but_not_model_sampling(
    flux_dev: DiffusionModel, manager: ModelManager
) -> None:
    clone = flux_dev.clone()
    clone.model_sampling = FluxFlow(0.5)

    assert flux_dev.model_sampling.mu == 1.15
    assert clone.module() is flux_dev.module()
    assert len(manager.resident()) == 1


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (9, 30)])
def test_flux_predicts_for_any_latent_size_in_float32(
    flux_dev: DiffusionModel, size: tuple[int, int]
) -> None:
    x = torch.randn(2, 16, *size)
    velocity = flux_dev.apply_model(x, torch.tensor([1.0, 0.5]), flux_inputs(2))
    assert velocity.shape == x.shape and velocity.dtype == torch.float32
    assert torch.isfinite(velocity).all()


def test_flux_dev_guidance_changes_the_prediction(flux_dev: DiffusionModel) -> None:
    x, sigma, given = torch.randn(1, 16, 8, 8), torch.tensor([0.5]), flux_inputs()
    default = flux_dev.apply_model(x, sigma, given)
    explicit_default = flux_dev.apply_model(
        x, sigma, ModelInputs(given.context, given.pooled, torch.tensor([3.5]))
    )
    stronger = flux_dev.apply_model(x, sigma, ModelInputs(given.context, given.pooled, torch.tensor([6.0])))
    assert torch.equal(default, explicit_default)
    assert not torch.allclose(default, stronger)


def test_auraflow_takes_odd_sizes_and_images_larger_than_its_position_table(aura: DiffusionModel) -> None:
    context = ModelInputs(torch.randn(1, 5, 32))
    odd = aura.apply_model(torch.randn(1, 4, 33, 21), torch.tensor([0.4]), context)
    assert odd.shape == (1, 4, 33, 21)
    beyond = aura.apply_model(torch.randn(1, 4, 200, 20), torch.tensor([0.4]), context)
    assert beyond.shape == (1, 4, 200, 20) and torch.isfinite(beyond).all()


def test_an_evicted_model_is_loaded_again_when_next_used(
    flux_dev: DiffusionModel, manager: ModelManager
) -> None:
    x, sigma, given = torch.randn(1, 16, 8, 8), torch.tensor([0.5]), flux_inputs()
    before = flux_dev.apply_model(x, sigma, given)
    manager.unload_all()

    assert manager.resident() == []
    assert torch.equal(flux_dev.apply_model(x, sigma, given), before)
    assert len(manager.resident()) == 1


def test_running_out_of_memory_in_a_forward_fails_that_call_and_frees_the_models(
    flux_dev: DiffusionModel, manager: ModelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    def exhausted(*args: object, **kwargs: object) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 48.00 GiB")

    monkeypatch.setattr(type(flux_dev.architecture), "predict", exhausted)
    with pytest.raises(OutOfMemoryError, match="while running Flux dev"):
        flux_dev.apply_model(torch.randn(1, 16, 8, 8), torch.tensor([0.5]), flux_inputs())
    assert manager.resident() == []


def test_models_compute_in_the_managers_dtype_and_answer_in_float32(test_models_dir: Path) -> None:
    """The GPU path (bf16 weights and activations), run on the CPU: exactly the fp32 model cast to bf16."""
    path = test_models_dir / "diffusion_models" / "flux1-dev.safetensors"
    x, sigma, given = torch.randn(1, 16, 8, 8), torch.tensor([0.5]), flux_inputs()
    bf16 = load_diffusion_model(
        path, manager=ModelManager(torch.device("cpu"), torch.bfloat16, budget_bytes=GIB)
    )
    fp32 = load_diffusion_model(
        path, manager=ModelManager(torch.device("cpu"), torch.float32, budget_bytes=GIB)
    )

    velocity = bf16.apply_model(x, sigma, given)

    assert {p.dtype for p in bf16.module().parameters()} == {torch.bfloat16}
    assert velocity.dtype == torch.float32
    cast = copy.deepcopy(fp32.module()).to(torch.bfloat16)
    with torch.no_grad():
        expected = fp32.architecture.predict(
            cast, x.bfloat16(), sigma, ModelInputs(given.context.bfloat16(), given.pooled.bfloat16())
        )
    assert torch.equal(velocity, expected.float())
