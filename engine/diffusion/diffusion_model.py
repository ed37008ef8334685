"""The MODEL value of a graph: a diffusion transformer named by its file, run through the model manager.

The object holds no weights. It knows where they are (file, tensor prefix), how to build the module
from them (its architecture: `flux.FluxConfig` or `auraflow.AuraFlowConfig`) and asks the model manager
for the module at each forward, so every graph naming the same file shares one resident copy and an
evicted model is quietly loaded again. A view with LoRAs carries them as weight patches, which the
shared module takes on for the view's forwards only (see lora.patches).

Each forward runs through the model manager's accelerator (the chosen attention kernels, the compiled
module when compiling is on) and, when step caching is on, through the model's step caches.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Protocol, cast

import torch
from diffusers.models.modeling_utils import ModelMixin

from engine.diffusion.latent_formats import LatentFormat
from engine.diffusion.lora.patches import WeightPatch, patched, patches_nbytes
from engine.diffusion.model_manager import HOST, ModelKey, ModelManager
from engine.diffusion.protocols import DenoiseMaskFunction, ModelInputs
from engine.diffusion.safetensors_file import load_tensors
from engine.diffusion.sampling.model_sampling import FlowModelSampling
from engine.diffusion.step_cache import StepCaches
from engine.diffusion.weights import instantiate


class Architecture(Protocol):
    """What a diffusion-transformer family provides (implemented by the family config dataclasses)."""

    @property
    def name(self) -> str: ...

    @property
    def latent_format(self) -> LatentFormat: ...

    def default_model_sampling(self) -> FlowModelSampling: ...

    def create_module(self) -> ModelMixin: ...

    def to_diffusers(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def predict(
        self, module: ModelMixin, x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs
    ) -> torch.Tensor: ...


class LoadedDiffusionModel:
    """A diffusion model from a weights file, implementing `protocols.DiffusionModel`."""

    def __init__(
        self,
        path: Path,
        prefix: str,
        architecture: Architecture,
        manager: ModelManager,
        storage_dtype: torch.dtype | None = None,
        size_hint: int | None = None,
        fast_fp8: bool = False,
    ) -> None:
        self.path = path
        self.prefix = prefix
        self.architecture = architecture
        self.manager = manager
        self.storage_dtype = storage_dtype
        """Keep weights in this dtype (fp8) and compute in the manager's; None: keep them in the manager's."""
        self.size_hint = size_hint
        self.fast_fp8 = fast_fp8
        """Multiply the blocks' linear layers in fp8 with scales (weight_dtype fp8_e4m3fn_fast; see fp8)."""
        self.model_sampling = architecture.default_model_sampling()
        self.key = ModelKey.for_file(
            path,
            f"diffusion_model:{prefix}",
            dtype=str(manager.dtype),
            storage=str(storage_dtype),
            fp8_matmul=str(fast_fp8),
        )
        threshold = manager.performance.step_cache_threshold
        self.step_caches = StepCaches(threshold) if threshold > 0 else None
        """Shared by this model's clones (their forwards are told apart by their inputs)."""
        self.patches: tuple[WeightPatch, ...] = ()
        """Changes (LoRAs) this view runs the shared module with; see lora.patches."""
        self.denoise_mask_function: DenoiseMaskFunction | None = None
        """DifferentialDiffusion's per-step mask; None on a plain model."""
        self.text_prefixes: tuple[torch.Tensor, ...] = ()
        """Token sets [1 or B, N, width] (float32, CPU) the model puts before the text tokens inside the
        transformer, first to last (USOStyleReference's style tokens)."""

    @property
    def latent_format(self) -> LatentFormat:
        return self.architecture.latent_format

    @property
    def device(self) -> torch.device:
        return self.manager.device

    @property
    def batch_cfg(self) -> bool:
        """Whether guidance may run the positive and negative prompt in one batch (see guiders)."""
        return self.manager.performance.batch_cfg

    @property
    def dtype(self) -> torch.dtype:
        return self.manager.dtype

    @property
    def nbytes(self) -> int:
        """Memory this view holds of its own (its LoRAs'; the weights belong to the model manager), so
        the executor's output cache counts what a cached LoRA-patched MODEL keeps alive."""
        prefixes = sum(t.numel() * t.element_size() for t in self.text_prefixes)
        return patches_nbytes(self.patches) + prefixes

    def clone(self) -> LoadedDiffusionModel:
        """A copy sharing the weights, whose model_sampling can be replaced without touching this one."""
        return copy.copy(self)

    def with_patches(self, patches: Sequence[WeightPatch]) -> LoadedDiffusionModel:
        """A clone running with `patches` after this view's own (LoRAs stack in the order applied)."""
        patched_view = self.clone()
        patched_view.patches = (*self.patches, *patches)
        return patched_view

    def with_text_prefix(self, tokens: torch.Tensor) -> LoadedDiffusionModel:
        """A clone putting `tokens` before the text tokens, ahead of any this view already puts there (as
        each of ComfyUI's post-input patches prepends in turn, the last applied comes first)."""
        prefixed = self.clone()
        prefixed.text_prefixes = (tokens, *self.text_prefixes)
        return prefixed

    def module(self) -> ModelMixin:
        """The resident module, loading it first if it is not."""
        return self.manager.load(self.key, self._build, self.size_hint, streamable=True)

    def _build(self) -> ModelMixin:
        # streamed from host memory (sequential offload): built there, so it need not fit on the device
        streamed = self.manager.performance.sequential_offload
        tensors = load_tensors(self.path, self.prefix, HOST if streamed else self.manager.device)
        return instantiate(
            f"{self.path.name} ({self.architecture.name})",
            self.architecture.create_module,
            self.architecture.to_diffusers(tensors),
            self.manager.dtype,
            self.storage_dtype,
            fp8_matmul=self.fast_fp8,
            compute_device=self.manager.device,
        )

    def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
        if self.patches and self.fast_fp8:
            raise ValueError(
                "LoRAs cannot be applied to a model loaded with weight_dtype fp8_e4m3fn_fast (its weights "
                "are scaled fp8); load it with fp8_e4m3fn or default"
            )
        module = self.module()
        device, dtype = self.device, self.dtype
        accelerator = self.manager.accelerator

        if self.text_prefixes:
            inputs = replace(inputs, text_prefix=_joined(self.text_prefixes, x.shape[0]))
        model_inputs = inputs.to(device, dtype)
        # The model is conditioned on the sampling's timestep, not on sigma itself: the two agree for
        # AuraFlow's and Flux's own samplings, and differ (as in ComfyUI) under ModelSamplingSD3.
        timestep = self.model_sampling.timestep(sigma)
        step_cached: AbstractContextManager[object] = nullcontext()
        if self.step_caches is not None:
            state = self.step_caches.state_for((id(inputs), tuple(x.shape)), float(sigma.max()))
            step_cached = self.step_caches.serving(module, state)
        # block-level step caching and streaming decide per block at run time: they run eagerly
        compiled = self.step_caches is None and not self.manager.performance.sequential_offload
        with (
            self.manager.out_of_memory_guard(f"running {self.architecture.name}"),
            torch.no_grad(),
            patched(module, self.patches),
            accelerator.running(),
            step_cached,
        ):
            velocity = self.architecture.predict(
                # the compiled wrapper is called and read as the module it wraps
                cast(ModelMixin, accelerator.forward_of(module, compiled)),
                x.to(device=device, dtype=dtype),
                timestep.to(device=device, dtype=torch.float32),
                model_inputs,
            )
        return velocity.float()


def _joined(prefixes: Sequence[torch.Tensor], batch: int) -> torch.Tensor:
    """Token sets of batch 1 or `batch`, one after the other, at `batch`."""
    sizes = {t.shape[0] for t in prefixes} - {1, batch}
    if sizes:
        raise ValueError(
            f"style tokens for {sorted(sizes)[0]} images cannot be given to a batch of {batch} latents "
            "(encode one reference image, or as many as the batch holds)"
        )
    return torch.cat([t.expand(batch, -1, -1) for t in prefixes], dim=1)
