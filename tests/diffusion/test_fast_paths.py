"""The fast forward (engine.performance): what is lossless equals the plain forward within a stated
tolerance, and what is not (fp8 matmuls, step caching) costs a measured, bounded amount.

Reference points are computed outside the path under test: two separate batch-1 forwards for batched
CFG, the eager module for the compiled one, the full-precision model for fp8, e4m3's rounding bound
(3 mantissa bits: half an ulp is 2^-4 of the value) for the quantiser, an uncached run for step caching.

Stated tolerances (float32 on the CPU, tiny random-weight models):
- batched CFG vs two forwards: max |difference| <= 1e-5 x max |x0|;
- compiled batched CFG vs eager separate forwards (one denoiser call): max |difference| <= 1e-4 x
  max |x0|.
Measured costs (README, "Performance"): fp8_e4m3fn_fast one forward 3.5 % relative L2 error (plain
fp8_e4m3fn storage, unscaled: 6.6 %); step caching skips 9 of 28 steps of Flux (threshold 0.5) and 11
of 28 of AuraFlow (threshold 1.0) for a final-latent relative L2 change of 4.2 % and 3.6 %.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from engine.diffusion import fp8
from engine.diffusion.acceleration import Accelerator
from engine.diffusion.diffusion_model import LoadedDiffusionModel
from engine.diffusion.embedding_cache import EmbeddingCache, EmbeddingKey
from engine.diffusion.loading import load_checkpoint, load_diffusion_model
from engine.diffusion.lora.patches import WeightPatch
from engine.diffusion.model_manager import ModelKey, ModelManager, module_bytes
from engine.diffusion.protocols import Conditioning, ModelInputs
from engine.diffusion.sampling.guiders import CFGGuider
from engine.diffusion.sampling.sampler import sampler_object
from engine.diffusion.sampling.schedulers import simple
from engine.diffusion.text_encoders import TextEncoderSource, load_clip, sources_in_checkpoint
from engine.performance import PerformanceSettings

GIB = 2**30
BATCH_TOLERANCE = 1e-5
COMPILE_TOLERANCE = 1e-4
FP8_FAST_ERROR = 0.05
"""Relative L2 error bound of one fp8_e4m3fn_fast forward (measured 0.035 on the test models)."""
STEP_CACHE_THRESHOLDS = {"flux": 0.5, "aura": 1.0}
"""Random tiny models change their first block's residual a lot from step to step (Flux's by 30-70 %,
AuraFlow's by 80-170 %; trained models by ~5-10 % late in a run), so the tests' thresholds are far
above those a real model would be run with."""
STEP_CACHE_ERROR = 0.1
"""Bound of the final latent's relative L2 change after 28 steps (measured: Flux 0.042, AuraFlow 0.036)."""


def manager(**settings: object) -> ModelManager:
    return ModelManager(torch.device("cpu"), torch.float32, 4 * GIB, PerformanceSettings(**settings))  # type: ignore[arg-type]


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def flux(test_models_dir: Path, models: ModelManager, weight_dtype: str = "default") -> LoadedDiffusionModel:
    return load_diffusion_model(
        test_models_dir / "diffusion_models" / "flux1-dev.safetensors", weight_dtype, manager=models
    )


def aura(test_models_dir: Path, models: ModelManager) -> LoadedDiffusionModel:
    path = test_models_dir / "checkpoints" / "aura_flow_0.3.safetensors"
    model, _, _ = load_checkpoint(path, [test_models_dir / "text_encoders"], manager=models)
    return model


def prompts(family: str) -> tuple[Conditioning, Conditioning]:
    """A positive and a negative prompt of the family's shapes (Flux: pooled and guidance too)."""
    if family == "flux":
        return (
            [
                [
                    torch.randn(1, 7, 32, generator=generator(1)),
                    {"pooled_output": torch.randn(1, 64, generator=generator(2)), "guidance": 3.5},
                ]
            ],
            [
                [
                    torch.randn(1, 7, 32, generator=generator(3)),
                    {"pooled_output": torch.randn(1, 64, generator=generator(4)), "guidance": 3.5},
                ]
            ],
        )
    return [[torch.randn(1, 9, 32, generator=generator(1)), {}]], [
        [torch.randn(1, 9, 32, generator=generator(3)), {}]
    ]


def load(family: str, test_models_dir: Path, models: ModelManager) -> LoadedDiffusionModel:
    return flux(test_models_dir, models) if family == "flux" else aura(test_models_dir, models)


def latent_shape(family: str, size: int = 8) -> tuple[int, int, int, int]:
    return (1, 16 if family == "flux" else 4, size, size)


def batch_of_two(family: str) -> tuple[torch.Tensor, torch.Tensor, ModelInputs]:
    """One CFG-sized forward's input: latent, sigma and inputs for a batch of two."""
    x = torch.randn(2, *latent_shape(family)[1:], generator=generator(5))
    sigma = torch.tensor([0.7, 0.7])
    if family == "flux":
        return (
            x,
            sigma,
            ModelInputs(
                torch.randn(2, 7, 32, generator=generator(6)),
                torch.randn(2, 64, generator=generator(7)),
                torch.full((2,), 3.5),
            ),
        )
    return x, sigma, ModelInputs(torch.randn(2, 9, 32, generator=generator(6)))


def relative_max(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).abs().max() / reference.abs().max())


def relative_l2(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).norm() / reference.norm())


# -- batched CFG ------------------------------------------------------------------------------------------


def separate_cfg(
    model: LoadedDiffusionModel, family: str, x: torch.Tensor, sigma: torch.Tensor, cfg: float
) -> torch.Tensor:
    """Guided x0 from one batch-1 forward per prompt, combined by CFG's formula here."""
    denoised = []
    for conditioning in prompts(family):
        tokens, options = conditioning[0]
        guidance = options.get("guidance")
        inputs = ModelInputs(
            tokens, options.get("pooled_output"), None if guidance is None else torch.tensor([guidance])
        )
        velocity = model.apply_model(x, sigma, inputs)
        denoised.append(model.model_sampling.calculate_denoised(sigma, velocity, x))
    positive, negative = denoised
    return negative + (positive - negative) * cfg


def guided_forwards(model: LoadedDiffusionModel, family: str) -> tuple[torch.Tensor, list[int]]:
    """(x0 of one CFG denoiser call on the latent of `cfg_latent`, the batch size of each forward made)."""
    calls: list[int] = []
    apply_model = model.apply_model

    def counted(x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        calls.append(x.shape[0])
        return apply_model(x, sigma, inputs)

    model.apply_model = counted  # type: ignore[method-assign]
    x, sigma = cfg_latent(family)
    guided = CFGGuider(model, *prompts(family), 4.0).denoiser(x.shape, keep_uncond=False)(x, sigma)
    del model.apply_model
    return guided, calls


def cfg_latent(family: str) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(latent_shape(family), generator=generator(8)), torch.tensor([0.6])


@pytest.mark.parametrize("family", ["flux", "aura"])
def test_batched_cfg_runs_one_forward_equal_to_two_separate_ones(family: str, test_models_dir: Path) -> None:
    model = load(family, test_models_dir, manager())
    guided, calls = guided_forwards(model, family)
    assert calls == [2]
    assert relative_max(guided, separate_cfg(model, family, *cfg_latent(family), 4.0)) <= BATCH_TOLERANCE


def test_batched_cfg_can_be_switched_off(test_models_dir: Path) -> None:
    model = flux(test_models_dir, manager(batch_cfg=False))
    guided, calls = guided_forwards(model, "flux")
    assert calls == [1, 1]
    assert torch.equal(guided, separate_cfg(model, "flux", *cfg_latent("flux"), 4.0))


# -- attention and torch.compile --------------------------------------------------------------------------


def test_the_cpu_keeps_torchs_own_attention_kernels_and_compiles_only_when_asked() -> None:
    accelerator = Accelerator(torch.device("cpu"), torch.float32, PerformanceSettings())
    assert [backend.name for backend in accelerator.attention_backends] == ["FLASH_ATTENTION", "MATH"]
    assert not accelerator.compiles and not accelerator.cuda_graphs
    module = torch.nn.Linear(4, 4)
    assert accelerator.forward_of(module) is module
    asked = Accelerator(torch.device("cpu"), torch.float32, PerformanceSettings(compile=True))
    assert asked.compiles and not asked.cuda_graphs
    assert asked.forward_of(module) is asked.forward_of(module) is not module


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flux", "aura"])
def test_the_compiled_batched_forward_equals_eager_separate_ones(family: str, test_models_dir: Path) -> None:
    """The optimised forward (compiled, cond and uncond in one batch) against the plain one (eager, one
    forward per prompt), on one CFG denoiser call at test size. Compiling takes two to three minutes
    on two shared cores."""
    eager = separate_cfg(load(family, test_models_dir, manager()), family, *cfg_latent(family), 4.0)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    models = manager(compile=True)
    model = load(family, test_models_dir, models)

    started = time.perf_counter()
    optimised, calls = guided_forwards(model, family)
    seconds = time.perf_counter() - started

    assert calls == [2]
    assert models.accelerator.forward_of(model.module()) is not model.module()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert relative_max(optimised, eager) <= COMPILE_TOLERANCE
    print(f"{family}: compile and first forward {seconds:.1f}s")


@pytest.mark.slow
def test_new_sizes_share_one_dynamic_graph_after_the_first() -> None:
    """Sizes after the first do not each compile: dynamo marks the changed dimension dynamic once."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    accelerator = Accelerator(torch.device("cpu"), torch.float32, PerformanceSettings(compile=True))
    module = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 16)).eval()
    forward = accelerator.forward_of(module)
    for tokens in (8, 12, 20, 36, 52):
        x = torch.randn(2, tokens, 16)
        with torch.no_grad(), accelerator.running():
            torch.testing.assert_close(forward(x), module(x))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2


# -- text-embedding cache ---------------------------------------------------------------------------------


def flux_clip(test_models_dir: Path, models: ModelManager, checkpoint: bool = False):  # type: ignore[no-untyped-def]
    roots = [test_models_dir / "text_encoders"]
    if checkpoint:
        sources = sources_in_checkpoint(test_models_dir / "checkpoints" / "flux1-schnell-fp8.safetensors")
    else:
        sources = [
            TextEncoderSource.from_file(root)
            for root in (roots[0] / "clip_l.safetensors", roots[0] / "t5xxl_fp16.safetensors")
        ]
    return load_clip(sources, "flux", roots, manager=models)


def count_passes(models: ModelManager) -> list[str]:
    """Names of the encoders that ran a pass, recorded by forward hooks on every resident encoder."""
    passes: list[str] = []
    for key in models.resident():
        module = models.load(key, lambda: pytest.fail("already resident"))
        module.register_forward_hook(lambda *_, name=key.part: passes.append(name))
    return passes


def test_a_repeated_prompt_skips_the_encoders_and_gets_the_fresh_conditioning(test_models_dir: Path) -> None:
    models = manager()
    first = flux_clip(test_models_dir, models)
    fresh = flux_clip(test_models_dir, manager(text_cache_bytes=0))
    tokens = first.tokenize("a (red:1.2) cat on a mat")
    first.encode_from_tokens(tokens, return_dict=True)
    passes = count_passes(models)

    again = flux_clip(test_models_dir, models).encode_from_tokens(tokens, return_dict=True)
    expected = fresh.encode_from_tokens(tokens, return_dict=True)

    assert passes == []
    assert torch.equal(again["cond"], expected["cond"])
    assert torch.equal(again["pooled_output"], expected["pooled_output"])
    again["cond"].mul_(0)  # a node changing its conditioning in place leaves the cached one alone
    assert torch.equal(first.encode_from_tokens(tokens), expected["cond"])


def test_another_prompt_or_encoder_misses_the_cache(test_models_dir: Path) -> None:
    models = manager()
    clip = flux_clip(test_models_dir, models)
    tokens = clip.tokenize("a red cat")
    clip.encode_from_tokens(tokens)
    passes = count_passes(models)

    clip.encode_from_tokens(clip.tokenize("a blue cat"))
    assert sorted(passes) == ["text_encoders.clip_l", "text_encoders.t5xxl"]
    clip.encode_from_tokens(clip.tokenize("a (red:1.5) cat"))
    assert len(passes) == 4
    misses = models.embedding_cache.misses
    flux_clip(test_models_dir, models, checkpoint=True).encode_from_tokens(tokens)
    assert models.embedding_cache.misses == misses + 2


@dataclass(frozen=True, eq=False)
class ConstantChange:
    """A LoRA-like change adding `value` to every element of a weight."""

    shape: tuple[int, ...]
    value: float = 0.05
    nbytes: int = 0

    def delta(self, rows: object, strength: float, device: torch.device) -> torch.Tensor:
        return torch.full(self.shape, self.value * strength, device=device)


def test_an_encoder_with_lora_patches_is_not_served_from_the_cache(test_models_dir: Path) -> None:
    models = manager()
    clip = flux_clip(test_models_dir, models)
    tokens = clip.tokenize("a red cat")
    plain = clip.encode_from_tokens(tokens)
    (key,) = [k for k in models.resident() if k.part == "text_encoders.t5xxl"]
    name, weight = next(iter(models.load(key, lambda: pytest.fail("resident")).named_parameters()))
    patched_clip = clip.with_patches(
        {"t5xxl": [WeightPatch(name, ConstantChange(tuple(weight.shape)), None, 1.0)]}
    )
    passes = count_passes(models)

    patched = patched_clip.encode_from_tokens(tokens)

    assert passes == ["text_encoders.t5xxl"]  # CLIP-L, unpatched, is served from the cache
    assert not torch.equal(patched, plain)
    assert torch.equal(clip.encode_from_tokens(tokens), plain)


def test_the_cache_stays_within_its_byte_budget_dropping_the_least_recently_used() -> None:
    entry = (torch.zeros(1, 4, 8), None)  # 128 bytes
    cache = EmbeddingCache(capacity_bytes=300)
    keys = [EmbeddingKey.of("encoder", [[(i, 1.0)]]) for i in range(3)]
    cache.put(keys[0], entry)
    cache.put(keys[1], entry)
    assert cache.get(keys[0]) is not None
    cache.put(keys[2], entry)
    assert cache.nbytes == 256
    assert cache.get(keys[1]) is None and cache.get(keys[0]) is not None and cache.get(keys[2]) is not None
    cache.put(EmbeddingKey.of("encoder", [[(9, 1.0)]]), (torch.zeros(1, 40, 8), None))
    assert cache.nbytes == 256


# -- fp8 matmuls ------------------------------------------------------------------------------------------


def test_row_quantisation_is_within_e4m3s_rounding() -> None:
    values = torch.randn(64, 48, generator=generator(9)) * torch.logspace(-3, 3, 64)[:, None]
    quantised, scale = fp8.quantize_rows(values)
    assert quantised.dtype == torch.float8_e4m3fn and scale.shape == (64, 1)
    restored = quantised.float() * scale
    bound = values.abs() * 2.0**-4 + scale * 2.0**-9  # half an ulp of 3 mantissa bits; subnormal step
    assert bool(((restored - values).abs() <= bound).all())


def test_fast_fp8_multiplies_in_fp8_within_the_stated_error(test_models_dir: Path) -> None:
    x, sigma, inputs = batch_of_two("flux")
    reference = flux(test_models_dir, manager()).apply_model(x, sigma, inputs)
    fast = flux(test_models_dir, manager(), "fp8_e4m3fn_fast")

    velocity = fast.apply_model(x, sigma, inputs)

    layers = [m for m in fast.module().modules() if isinstance(m, fp8.Fp8Linear)]
    assert {layer.weight.dtype for layer in layers} == {torch.float8_e4m3fn}
    # double blocks: 8 attention, 2 x 2 MLP layers; single blocks: q, k, v, MLP in, out
    assert sum(layer.scaled for layer in layers) == 2 * 12 + 2 * 5
    # the modulations (two per double block, one per single) keep fp8 weights, multiplied wide;
    # the embeddings and final layer stay plain linear layers in the compute dtype
    assert len(layers) == 2 * 12 + 2 * 5 + 2 * 2 + 2
    outside = [m for m in fast.module().modules() if type(m) is torch.nn.Linear]
    assert outside and {m.weight.dtype for m in outside} == {torch.float32}
    error = relative_l2(velocity, reference)
    assert 0 < error <= FP8_FAST_ERROR
    print(f"fp8_e4m3fn_fast relative L2 error of one forward: {error:.4f}")


def test_fast_fp8_dequantises_where_scaled_matmul_is_unavailable(
    test_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, sigma, inputs = batch_of_two("flux")
    reference = flux(test_models_dir, manager()).apply_model(x, sigma, inputs)
    monkeypatch.setattr(fp8, "scaled_mm_works", lambda *_: False)
    monkeypatch.setattr(torch, "_scaled_mm", lambda *_, **__: pytest.fail("scaled matmul called"))
    model = flux(test_models_dir, manager(), "fp8_e4m3fn_fast")
    velocity = model.apply_model(x, sigma, inputs)
    assert not any(m.scaled for m in model.module().modules() if isinstance(m, fp8.Fp8Linear))
    assert 0 < relative_l2(velocity, reference) <= FP8_FAST_ERROR


def test_fast_fp8_refuses_loras_rather_than_patching_scaled_weights(test_models_dir: Path) -> None:
    model = flux(test_models_dir, manager(), "fp8_e4m3fn_fast")
    view = model.with_patches([WeightPatch("x_embedder.weight", ConstantChange((64, 64)), None, 1.0)])
    x, sigma, inputs = batch_of_two("flux")
    with pytest.raises(ValueError, match="fp8_e4m3fn_fast"):
        view.apply_model(x, sigma, inputs)


# -- step caching -----------------------------------------------------------------------------------------


def sample(model: LoadedDiffusionModel, family: str, steps: int = 28) -> torch.Tensor:
    positive, negative = prompts(family)
    guider = CFGGuider(
        model, positive, negative if family == "aura" else None, 5.0 if family == "aura" else 1.0
    )
    shape = latent_shape(family, 16)
    noise = torch.randn(shape, generator=generator(10))
    return guider.sample(
        noise, torch.zeros(shape), sampler_object("euler"), simple(model.model_sampling, steps)
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flux", "aura"])
def test_step_caching_skips_steps_at_a_measured_cost(family: str, test_models_dir: Path) -> None:
    uncached = sample(load(family, test_models_dir, manager()), family)
    model = load(family, test_models_dir, manager(step_cache_threshold=STEP_CACHE_THRESHOLDS[family]))

    cached = sample(model, family)

    assert model.step_caches is not None
    (state,) = model.step_caches._states.values()
    error = relative_l2(cached, uncached)
    print(f"{family}: step caching skipped {state.skipped}/28 steps, final latent relative L2 {error:.4f}")
    assert state.skipped + state.computed == 28
    assert state.skipped >= 4
    assert 0 < error <= STEP_CACHE_ERROR


def test_a_tiny_threshold_skips_nothing_and_changes_nothing(test_models_dir: Path) -> None:
    uncached = sample(flux(test_models_dir, manager()), "flux", steps=6)
    model = flux(test_models_dir, manager(step_cache_threshold=1e-9))
    assert torch.equal(sample(model, "flux", steps=6), uncached)
    assert model.step_caches is not None
    (state,) = model.step_caches._states.values()
    assert (state.skipped, state.computed) == (0, 6)


# -- memory -----------------------------------------------------------------------------------------------


def test_an_offloaded_encoder_leaves_the_device_budget_and_comes_back_unchanged(
    test_models_dir: Path,
) -> None:
    models = manager(text_cache_bytes=0)
    clip = flux_clip(test_models_dir, models)
    tokens = clip.tokenize("a red cat")
    before = clip.encode_from_tokens(tokens)
    used = models.used_bytes
    key = next(k for k in models.resident() if k.part == "text_encoders.t5xxl")

    assert models.offload(key)
    assert key not in models.resident() and models.offloaded() == [key]
    assert models.used_bytes < used
    assert torch.equal(clip.encode_from_tokens(tokens), before)
    assert key in models.resident() and models.offloaded() == []
    assert models.used_bytes == used


def test_text_encoders_stay_put_when_computing_on_the_cpu(test_models_dir: Path) -> None:
    """Host memory is the CPU's device memory: moving there would free nothing."""
    models = manager(offload_text_encoders="always")
    clip = flux_clip(test_models_dir, models)
    clip.encode_from_tokens(clip.tokenize("a red cat"))
    assert models.offloaded() == [] and len(models.resident()) == 2


@pytest.mark.parametrize("family", ["flux", "aura"])
def test_sequential_offload_streams_blocks_and_gives_the_same_forward(
    family: str, test_models_dir: Path
) -> None:
    x, sigma, inputs = batch_of_two(family)
    resident = load(family, test_models_dir, manager()).apply_model(x, sigma, inputs)
    models = manager(sequential_offload=True)
    model = load(family, test_models_dir, models)

    streamed = model.apply_model(x, sigma, inputs)

    module = model.module()
    blocks = [*getattr(module, "transformer_blocks", ()), *getattr(module, "joint_transformer_blocks", ())]
    blocks += module.single_transformer_blocks
    assert len(blocks) == 4
    assert all(block._forward_pre_hooks and block._forward_hooks for block in blocks)
    streamed_bytes = module_bytes(module) - sum(module_bytes(block) for block in blocks)
    assert models._resident[model.key].nbytes == streamed_bytes
    assert torch.equal(streamed, resident)


def test_model_keys_tell_fast_fp8_apart(test_models_dir: Path) -> None:
    models = manager()
    plain = flux(test_models_dir, models, "fp8_e4m3fn")
    fast = flux(test_models_dir, models, "fp8_e4m3fn_fast")
    assert isinstance(plain.key, ModelKey) and plain.key != fast.key
    assert len(models.resident()) == 2
