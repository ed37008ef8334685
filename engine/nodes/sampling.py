"""Sampling nodes with ComfyUI's names, inputs and defaults: KSampler, the custom-sampling family and the
ModelSampling* patches. The work is in engine.diffusion.sampling; these only map widgets to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

from engine.diffusion.protocols import DiffusionModel
from engine.diffusion.sampling.device_thread import DeviceThread
from engine.diffusion.sampling.guiders import BasicGuider as BasicGuiderValue
from engine.diffusion.sampling.guiders import CFGGuider as CFGGuiderValue
from engine.diffusion.sampling.model_sampling import DiscreteFlow, FluxFlow, flux_mu
from engine.diffusion.sampling.noise import DisableNoise as DisableNoiseValue
from engine.diffusion.sampling.noise import RandomNoise as RandomNoiseValue
from engine.diffusion.sampling.sample import Guider, Latent, NoiseSource, ksample, sample_custom
from engine.diffusion.sampling.sampler import Sampler, sampler_object
from engine.diffusion.sampling.samplers import SAMPLER_NAMES
from engine.diffusion.sampling.schedulers import SCHEDULER_NAMES, denoised_sigmas
from engine.nodes.latent import MAX_RESOLUTION

MAX_SEED = 0xFFFFFFFFFFFFFFFF

SEED = ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True})
CFG = ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01})
STEPS = ("INT", {"default": 20, "min": 1, "max": 10000})
DENOISE = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})
SHIFT_OPTIONS = {"min": 0.0, "max": 100.0, "step": 0.01}

KSAMPLER_TOOLTIPS = {
    "model": "The model used for denoising the input latent.",
    "seed": "The random seed used for creating the noise.",
    "steps": "The number of steps used in the denoising process.",
    "cfg": "The Classifier-Free Guidance scale balances creativity and adherence to the prompt. Higher "
    "values result in images more closely matching the prompt however too high values will negatively "
    "impact quality.",
    "sampler_name": "The algorithm used when sampling, this can affect the quality, speed, and style of "
    "the generated output.",
    "scheduler": "The scheduler controls how noise is gradually removed to form the image.",
    "positive": "The conditioning describing the attributes you want to include in the image.",
    "negative": "The conditioning describing the attributes you want to exclude from the image.",
    "latent_image": "The latent image to denoise.",
    "denoise": "The amount of denoising applied, lower values will maintain the structure of the initial "
    "image allowing for image to image sampling.",
}
"""ComfyUI's KSampler tooltips, word for word: the editor shows them."""


def _tip(spec: tuple[Any, ...], tooltip: str) -> tuple[Any, ...]:
    return (spec[0], {**(spec[1] if len(spec) > 1 else {}), "tooltip": tooltip})


T = TypeVar("T")


class _Sampling:
    """A node that runs the diffusion model's step loop: on the device's sampling thread, which the
    executor passes in as the `device_thread` resource (without one, on the caller's thread)."""

    def __init__(self, device_thread: DeviceThread | None = None) -> None:
        self._device_thread = device_thread

    def _sample(self, loop: Callable[[], T]) -> T:
        return self._device_thread.run(loop) if self._device_thread is not None else loop()


class KSampler(_Sampling):
    CATEGORY = "sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The denoised latent.",)
    DESCRIPTION = "Uses the provided model, positive and negative conditioning to denoise the latent image."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        tips = KSAMPLER_TOOLTIPS
        return {
            "required": {
                "model": ("MODEL", {"tooltip": tips["model"]}),
                "seed": _tip(SEED, tips["seed"]),
                "steps": _tip(STEPS, tips["steps"]),
                "cfg": _tip(CFG, tips["cfg"]),
                "sampler_name": (SAMPLER_NAMES, {"tooltip": tips["sampler_name"]}),
                "scheduler": (SCHEDULER_NAMES, {"tooltip": tips["scheduler"]}),
                "positive": ("CONDITIONING", {"tooltip": tips["positive"]}),
                "negative": ("CONDITIONING", {"tooltip": tips["negative"]}),
                "latent_image": ("LATENT", {"tooltip": tips["latent_image"]}),
                "denoise": _tip(DENOISE, tips["denoise"]),
            }
        }

    def sample(
        self,
        model: DiffusionModel,
        seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Any,
        negative: Any,
        latent_image: Latent,
        denoise: float = 1.0,
    ) -> tuple[Latent]:
        latent = self._sample(
            lambda: ksample(
                model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise
            )
        )
        return (latent,)


class KSamplerAdvanced(_Sampling):
    CATEGORY = "sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "add_noise": (["enable", "disable"],),
                "noise_seed": SEED,
                "steps": STEPS,
                "cfg": CFG,
                "sampler_name": (SAMPLER_NAMES,),
                "scheduler": (SCHEDULER_NAMES,),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "latent_image": ("LATENT",),
                "start_at_step": ("INT", {"default": 0, "min": 0, "max": 10000}),
                "end_at_step": ("INT", {"default": 10000, "min": 0, "max": 10000}),
                "return_with_leftover_noise": (["disable", "enable"],),
            }
        }

    def sample(
        self,
        model: DiffusionModel,
        add_noise: str,
        noise_seed: int,
        steps: int,
        cfg: float,
        sampler_name: str,
        scheduler: str,
        positive: Any,
        negative: Any,
        latent_image: Latent,
        start_at_step: int,
        end_at_step: int,
        return_with_leftover_noise: str,
        denoise: float = 1.0,
    ) -> tuple[Latent]:
        latent = self._sample(
            lambda: ksample(
                model,
                noise_seed,
                steps,
                cfg,
                sampler_name,
                scheduler,
                positive,
                negative,
                latent_image,
                denoise=denoise,
                disable_noise=add_noise == "disable",
                start_step=start_at_step,
                last_step=end_at_step,
                force_full_denoise=return_with_leftover_noise != "enable",
            )
        )
        return (latent,)


class SamplerCustom(_Sampling):
    CATEGORY = "sampling/custom_sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "add_noise": ("BOOLEAN", {"default": True}),
                "noise_seed": SEED,
                "cfg": CFG,
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "sampler": ("SAMPLER",),
                "sigmas": ("SIGMAS",),
                "latent_image": ("LATENT",),
            }
        }

    def sample(
        self,
        model: DiffusionModel,
        add_noise: bool,
        noise_seed: int,
        cfg: float,
        positive: Any,
        negative: Any,
        sampler: Sampler,
        sigmas: torch.Tensor,
        latent_image: Latent,
    ) -> tuple[Latent, Latent]:
        noise = RandomNoiseValue(noise_seed) if add_noise else DisableNoiseValue(noise_seed)
        guider = CFGGuiderValue(model, positive, negative, cfg)
        return self._sample(lambda: sample_custom(noise, guider, sampler, sigmas, latent_image))


class SamplerCustomAdvanced(_Sampling):
    CATEGORY = "sampling/custom_sampling"
    FUNCTION = "sample"
    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("output", "denoised_output")

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "noise": ("NOISE",),
                "guider": ("GUIDER",),
                "sampler": ("SAMPLER",),
                "sigmas": ("SIGMAS",),
                "latent_image": ("LATENT",),
            }
        }

    def sample(
        self, noise: NoiseSource, guider: Guider, sampler: Sampler, sigmas: torch.Tensor, latent_image: Latent
    ) -> tuple[Latent, Latent]:
        return self._sample(lambda: sample_custom(noise, guider, sampler, sigmas, latent_image))


class RandomNoise:
    CATEGORY = "sampling/custom_sampling/noise"
    FUNCTION = "get_noise"
    RETURN_TYPES = ("NOISE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"noise_seed": SEED}}

    def get_noise(self, noise_seed: int) -> tuple[RandomNoiseValue]:
        return (RandomNoiseValue(noise_seed),)


class DisableNoise:
    CATEGORY = "sampling/custom_sampling/noise"
    FUNCTION = "get_noise"
    RETURN_TYPES = ("NOISE",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {}}

    def get_noise(self) -> tuple[DisableNoiseValue]:
        return (DisableNoiseValue(),)


class KSamplerSelect:
    CATEGORY = "sampling/custom_sampling/samplers"
    FUNCTION = "get_sampler"
    RETURN_TYPES = ("SAMPLER",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"sampler_name": (SAMPLER_NAMES,)}}

    def get_sampler(self, sampler_name: str) -> tuple[Sampler]:
        return (sampler_object(sampler_name),)


class BasicScheduler:
    CATEGORY = "sampling/custom_sampling/schedulers"
    FUNCTION = "get_sigmas"
    RETURN_TYPES = ("SIGMAS",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "scheduler": (SCHEDULER_NAMES,),
                "steps": STEPS,
                "denoise": DENOISE,
            }
        }

    def get_sigmas(
        self, model: DiffusionModel, scheduler: str, steps: int, denoise: float
    ) -> tuple[torch.Tensor]:
        return (denoised_sigmas(model.model_sampling, scheduler, steps, denoise).cpu(),)


class BasicGuider:
    CATEGORY = "sampling/custom_sampling/guiders"
    FUNCTION = "get_guider"
    RETURN_TYPES = ("GUIDER",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "conditioning": ("CONDITIONING",)}}

    def get_guider(self, model: DiffusionModel, conditioning: Any) -> tuple[BasicGuiderValue]:
        return (BasicGuiderValue(model, conditioning),)


class CFGGuider:
    CATEGORY = "sampling/custom_sampling/guiders"
    FUNCTION = "get_guider"
    RETURN_TYPES = ("GUIDER",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "model": ("MODEL",),
                "positive": ("CONDITIONING",),
                "negative": ("CONDITIONING",),
                "cfg": CFG,
            }
        }

    def get_guider(
        self, model: DiffusionModel, positive: Any, negative: Any, cfg: float
    ) -> tuple[CFGGuiderValue]:
        return (CFGGuiderValue(model, positive, negative, cfg),)


class ModelSamplingSD3:
    CATEGORY = "advanced/model"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "shift": ("FLOAT", {"default": 3.0, **SHIFT_OPTIONS})}}

    def patch(self, model: DiffusionModel, shift: float, multiplier: float = 1000) -> tuple[DiffusionModel]:
        patched = model.clone()
        patched.model_sampling = DiscreteFlow(shift=shift, multiplier=multiplier)
        return (patched,)


class ModelSamplingAuraFlow(ModelSamplingSD3):
    FUNCTION = "patch_aura"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"model": ("MODEL",), "shift": ("FLOAT", {"default": 1.73, **SHIFT_OPTIONS})}}

    def patch_aura(self, model: DiffusionModel, shift: float) -> tuple[DiffusionModel]:
        return self.patch(model, shift, multiplier=1.0)


class ModelSamplingFlux:
    CATEGORY = "advanced/model"
    FUNCTION = "patch"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        size = {"default": 1024, "min": 16, "max": MAX_RESOLUTION, "step": 8}
        return {
            "required": {
                "model": ("MODEL",),
                "max_shift": ("FLOAT", {"default": 1.15, **SHIFT_OPTIONS}),
                "base_shift": ("FLOAT", {"default": 0.5, **SHIFT_OPTIONS}),
                "width": ("INT", dict(size)),
                "height": ("INT", dict(size)),
            }
        }

    def patch(
        self, model: DiffusionModel, max_shift: float, base_shift: float, width: int, height: int
    ) -> tuple[DiffusionModel]:
        patched = model.clone()
        patched.model_sampling = FluxFlow(mu=flux_mu(width, height, max_shift, base_shift))
        return (patched,)


NODE_CLASS_MAPPINGS = {
    "KSampler": KSampler,
    "KSamplerAdvanced": KSamplerAdvanced,
    "SamplerCustom": SamplerCustom,
    "SamplerCustomAdvanced": SamplerCustomAdvanced,
    "RandomNoise": RandomNoise,
    "DisableNoise": DisableNoise,
    "KSamplerSelect": KSamplerSelect,
    "BasicScheduler": BasicScheduler,
    "BasicGuider": BasicGuider,
    "CFGGuider": CFGGuider,
    "ModelSamplingSD3": ModelSamplingSD3,
    "ModelSamplingAuraFlow": ModelSamplingAuraFlow,
    "ModelSamplingFlux": ModelSamplingFlux,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "KSampler": "KSampler",
    "KSamplerAdvanced": "KSampler (Advanced)",
}
