"""The baseline: diffusers' AuraFlowPipeline and FluxPipeline on the benchmark's own files.

The pipelines are built as a diffusers user converting ComfyUI-layout single files would build them:
the transformers and VAEs through diffusers' single-file converters (`convert_flux_transformer_...`,
`convert_auraflow_transformer_...`, `convert_ldm_vae_checkpoint`, the functions `from_single_file`
runs) into diffusers' model classes, the text encoders as transformers' CLIPTextModel / T5EncoderModel
/ UMT5EncoderModel with the files' tensors, the schedulers with the published models' scheduler
configs, all in the compute dtype on the device. Prompts are encoded by the pipelines themselves, at
256 T5 tokens as the engine does (FluxPipeline's default is 512, which is more work, not the same).

The Flux converter names the published width (3072) where it splits the single blocks' fused
projections; for the tiny models that one literal is rebound to their width, so diffusers' own code
runs at both sizes (as tests/diffusion/test_key_mapping.py does).

For the comparison, the pipeline is called with what the engine's graph fed its transformer (noise,
conditioning, guidance, sigmas; see engine_runs.Capture) and a pass-through Euler scheduler, so both
sides compute the same sampling: any difference is in the sampler's arithmetic, the key mapping, the
latent scaling or the VAE.
"""

from __future__ import annotations

import itertools
import time
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers.loaders.single_file_utils import (
    convert_auraflow_transformer_checkpoint_to_diffusers,
    convert_flux_transformer_checkpoint_to_diffusers,
    convert_ldm_vae_checkpoint,
)
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.transformers.auraflow_transformer_2d import AuraFlowTransformer2DModel
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
from diffusers.pipelines.aura_flow.pipeline_aura_flow import AuraFlowPipeline
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
from safetensors.torch import load_file
from transformers import CLIPTokenizer, T5Tokenizer

from engine.bench.engine_runs import PROMPT, Capture, Case
from engine.bench.measure import GpuBusySampler, read_peak, release, reset_peak, synchronize
from engine.bench.results import SystemResult, Throughput
from engine.bench.weights import WeightsCache
from engine.bench.work import ImageWork
from engine.diffusion.autoencoder import AutoencoderConfig
from engine.diffusion.text_encoders import CHECKPOINT_PREFIXES, TextEncoderSource
from engine.diffusion.text_encoders.loading import build_module
from engine.diffusion.text_encoders.tokenizer_files import TOKENIZERS_FOLDER

T5_TOKENS = 256
CLIP_TOKENS = 77
PUBLISHED_FLUX_WIDTH = 3072

FLUX_SCHEDULERS: dict[str, dict[str, Any]] = {
    "flux-schnell": {"shift": 1.0, "use_dynamic_shifting": False},
    "flux-dev": {"shift": 3.0, "use_dynamic_shifting": True},
}
"""The published FLUX.1 repos' scheduler configs (both: base_shift 0.5, max_shift 1.15 over 256..4096
image tokens, 1000 training timesteps)."""
FLUX_SHIFTING = {"base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096}
AURAFLOW_SCHEDULER: dict[str, Any] = {"shift": 1.73}
FLUX_AE_SCALING = {"scaling_factor": 0.3611, "shift_factor": 0.1159}
SDXL_VAE_SCALING = {"scaling_factor": 0.13025}
FLUX_DEV_GUIDANCE = 3.5

Model = TypeVar("Model", bound=ModelMixin)


def flux_converter(width: int) -> Callable[..., dict[str, torch.Tensor]]:
    """diffusers' Flux converter, with its one size-specific literal set to `width` for other widths."""
    if width == PUBLISHED_FLUX_WIDTH:
        return convert_flux_transformer_checkpoint_to_diffusers
    code = convert_flux_transformer_checkpoint_to_diffusers.__code__
    if code.co_consts.count(PUBLISHED_FLUX_WIDTH) != 1:
        raise RuntimeError("diffusers' Flux converter no longer names the width once; cannot resize it")
    constants = tuple(width if c == PUBLISHED_FLUX_WIDTH else c for c in code.co_consts)
    return types.FunctionType(
        code.replace(co_consts=constants), convert_flux_transformer_checkpoint_to_diffusers.__globals__
    )


def assign_weights(
    factory: Callable[[], Model],
    state: Mapping[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype,
) -> Model:
    """The model holding exactly `state`, built without random initialisation (on the meta device)."""
    with torch.device("meta"):
        module = factory()
    module.load_state_dict({k: v.to(dtype) for k, v in state.items()}, strict=True, assign=True)
    resident: torch.nn.Module = module  # moved in place (ModelMixin.to's wrapper hides the signature)
    resident.to(device).eval().requires_grad_(False)
    return module


def under_prefix(tensors: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) :]: t for name, t in tensors.items() if name.startswith(prefix)}


def diffusers_vae(
    tensors: Mapping[str, torch.Tensor],
    config: AutoencoderConfig,
    scaling: Mapping[str, float],
    device: torch.device,
    dtype: torch.dtype,
) -> AutoencoderKL:
    diffusers_config = {**config.diffusers_config(), **scaling}
    converted = convert_ldm_vae_checkpoint(dict(tensors), diffusers_config)
    return assign_weights(lambda: AutoencoderKL(**diffusers_config), converted, device, dtype)


def _text_encoder(
    cache: WeightsCache, key: str, prefix: str, device: torch.device, dtype: torch.dtype
) -> Any:
    """transformers' encoder class for the file (CLIPTextModel, T5EncoderModel or UMT5EncoderModel)."""
    source = TextEncoderSource.from_file(cache.path(key), prefix)
    return build_module(source, dtype).to(device).eval().requires_grad_(False)


def _tokenizers(cache: WeightsCache) -> Path:
    return cache.models_dir / "text_encoders" / TOKENIZERS_FOLDER


def build_pipeline(endpoint: str, cache: WeightsCache, device: torch.device, dtype: torch.dtype) -> Any:
    """The endpoint's diffusers pipeline over the cache's files, resident on `device`."""
    sizes, tokenizers = cache.sizes, _tokenizers(cache)
    if endpoint == "aura-flow":
        tensors = load_file(cache.path("aura_flow"), device=str(device))
        config = sizes.auraflow
        transformer = assign_weights(
            lambda: AuraFlowTransformer2DModel(**config.diffusers_config()),
            convert_auraflow_transformer_checkpoint_to_diffusers(under_prefix(tensors, "model.")),
            device,
            dtype,
        )
        vae = diffusers_vae(under_prefix(tensors, "vae."), sizes.sdxl_vae, SDXL_VAE_SCALING, device, dtype)
        del tensors
        encoder = _text_encoder(cache, "aura_flow", CHECKPOINT_PREFIXES["pile_t5xl"], device, dtype)
        tokenizer = T5Tokenizer(vocab_file=str(tokenizers / "pile_t5xl" / "tokenizer.model"))
        return AuraFlowPipeline(
            tokenizer=tokenizer,
            text_encoder=encoder,
            vae=vae,
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(**AURAFLOW_SCHEDULER),
        )
    key = "flux_schnell" if endpoint == "flux-schnell" else "flux_dev"
    flux_config = sizes.flux_schnell if endpoint == "flux-schnell" else sizes.flux_dev
    converted = flux_converter(flux_config.hidden_size)(load_file(cache.path(key), device=str(device)))
    transformer = assign_weights(
        lambda: FluxTransformer2DModel(**flux_config.diffusers_config()), converted, device, dtype
    )
    del converted
    vae = diffusers_vae(
        load_file(cache.path("flux_ae"), device=str(device)), sizes.flux_ae, FLUX_AE_SCALING, device, dtype
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULERS[endpoint], **FLUX_SHIFTING),
        vae=vae,
        text_encoder=_text_encoder(cache, "clip_l", "", device, dtype),
        tokenizer=CLIPTokenizer(
            vocab_file=str(tokenizers / "clip_l" / "vocab.json"),
            merges_file=str(tokenizers / "clip_l" / "merges.txt"),
            model_max_length=CLIP_TOKENS,
        ),
        text_encoder_2=_text_encoder(cache, "t5xxl", "", device, dtype),
        tokenizer_2=T5Tokenizer(vocab_file=str(tokenizers / "t5xxl" / "spiece.model")),
        transformer=transformer,
    )


def call_arguments(case: Case, side: int) -> dict[str, Any]:
    """The pipeline arguments for the endpoint's run (its steps and guidance, the benchmark's size)."""
    arguments: dict[str, Any] = {"num_inference_steps": case.steps, "height": side, "width": side}
    if case.endpoint == "aura-flow":
        return {
            **arguments,
            "negative_prompt": "",
            "guidance_scale": case.cfg,
            "max_sequence_length": T5_TOKENS,
        }
    guidance = FLUX_DEV_GUIDANCE if case.endpoint == "flux-dev" else 0.0
    return {**arguments, "guidance_scale": guidance, "max_sequence_length": T5_TOKENS}


@dataclass
class DiffusersOutcome:
    result: SystemResult
    image: torch.Tensor | None
    """The comparison call's image, [3, H, W] in [0, 1]."""


class DiffusersBench:
    def __init__(self, cache: WeightsCache, device: torch.device, dtype: torch.dtype, side: int) -> None:
        self.cache = cache
        self.device = device
        self.dtype = dtype
        self.side = side

    def run(self, case: Case, work: ImageWork, runs: int, capture: Capture | None) -> DiffusersOutcome:
        release(self.device)  # the engine's models, unloaded, are gone before diffusers' load
        reset_peak(self.device)
        started = time.perf_counter()
        pipeline = build_pipeline(case.endpoint, self.cache, self.device, self.dtype)
        pipeline.set_progress_bar_config(disable=True)
        synchronize(self.device)
        load = time.perf_counter() - started
        arguments = call_arguments(case, self.side)
        self._call(pipeline, arguments, PROMPT + ", warm-up", 0)
        startup = time.perf_counter() - started
        with GpuBusySampler(self.device) as busy:
            latencies = [self._call(pipeline, arguments, f"{PROMPT}, take {i}", 1 + i) for i in range(runs)]
        stages, steps = self._profile(pipeline, arguments)
        image = self._compare(pipeline, case, capture) if capture is not None else None
        peak = read_peak(self.device)
        del pipeline
        release(self.device)
        return DiffusersOutcome(
            SystemResult.measured(
                "diffusers",
                work=work,
                steps=case.steps,
                latencies=latencies,
                step_intervals=steps,
                load_s=load,
                startup_s=startup,
                stages_s=stages,
                peak=peak,
                throughput=Throughput.sequential(latencies, busy.percent),
                notes=[
                    "latency: one pipeline call with a prompt string (encoding included) to a PIL image",
                    "throughput: the timed calls one after another (a pipeline has no queue)",
                ],
            ),
            image,
        )

    def _call(self, pipeline: Any, arguments: dict[str, Any], text: str, seed: int, **extra: Any) -> float:
        started = time.perf_counter()
        pipeline(prompt=text, generator=torch.Generator("cpu").manual_seed(seed), **arguments, **extra)
        synchronize(self.device)
        return time.perf_counter() - started

    def _profile(self, pipeline: Any, arguments: dict[str, Any]) -> tuple[dict[str, float], list[float]]:
        """One call with the device synchronised at each step's end: phase times and step intervals."""
        marks: list[float] = []

        def on_step_end(
            _pipeline: Any, _step: int, _timestep: Any, _tensors: dict[str, Any]
        ) -> dict[str, Any]:
            synchronize(self.device)
            marks.append(time.perf_counter())
            return {}

        synchronize(self.device)
        started = time.perf_counter()
        self._call(pipeline, arguments, f"{PROMPT}, profiled", 100, callback_on_step_end=on_step_end)
        ended = time.perf_counter()
        steps = [later - earlier for earlier, later in itertools.pairwise(marks)]
        stages = {
            "encode_prompt_and_first_step": marks[0] - started,
            "remaining_steps": marks[-1] - marks[0],
            "decode_and_postprocess": ended - marks[-1],
        }
        return stages, steps

    def _compare(self, pipeline: Any, case: Case, capture: Capture) -> torch.Tensor:
        """The pipeline on the engine's transformer inputs, with its sigmas passed through unchanged."""
        inputs = comparison_inputs(case, capture)
        scheduler = pipeline.scheduler
        pipeline.scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
        try:
            images = pipeline(
                **{
                    name: value.to(self.device, self.dtype) if isinstance(value, torch.Tensor) else value
                    for name, value in inputs.items()
                },
                height=self.side,
                width=self.side,
                output_type="pt",
            ).images
        finally:
            pipeline.scheduler = scheduler
        return images[0].float().cpu()


def comparison_inputs(case: Case, capture: Capture) -> dict[str, Any]:
    """Pipeline arguments that repeat the engine's sampling: its first forward's inputs and its sigmas.

    The sigmas are the timesteps of the forwards in order (the engine conditions the transformer on
    sigma itself). With guidance, the first step's forwards hold the prompt's and the empty negative
    prompt's states (batched or not); AuraFlow's Pile-T5 zeroes every state past a prompt's first EOS,
    so the empty prompt is the row with the fewest non-zero token states.
    """
    sigmas: list[float] = []
    for call in capture.calls:
        sigma = float(call["timestep"].reshape(-1)[0])
        if not sigmas or sigma != sigmas[-1]:
            sigmas.append(sigma)
    first = [call for call in capture.calls if float(call["timestep"].reshape(-1)[0]) == sigmas[0]]
    latents = torch.cat([call["hidden_states"] for call in first])[:1]
    context = torch.cat([call["encoder_hidden_states"] for call in first])
    arguments: dict[str, Any] = {"sigmas": sigmas, "num_inference_steps": len(sigmas), "latents": latents}
    if case.endpoint == "aura-flow":
        tokens_used = (context.abs().sum(dim=-1) > 0).sum(dim=-1)
        prompt = context[int(tokens_used.argmax())][None]
        arguments |= {
            "prompt_embeds": prompt,
            "prompt_attention_mask": torch.ones(prompt.shape[:2]),
            "guidance_scale": case.cfg,
            "max_sequence_length": prompt.shape[1],
        }
        if case.guided:
            negative = context[int(tokens_used.argmin())][None]
            arguments |= {
                "negative_prompt_embeds": negative,
                "negative_prompt_attention_mask": torch.ones(negative.shape[:2]),
            }
        return arguments
    guidance = first[0].get("guidance")
    return arguments | {
        "prompt_embeds": context[:1],
        "pooled_prompt_embeds": torch.cat([call["pooled_projections"] for call in first])[:1],
        "guidance_scale": float(guidance.reshape(-1)[0]) if guidance is not None else 0.0,
        "max_sequence_length": context.shape[1],
    }
