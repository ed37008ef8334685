"""What every sampler function shares: its contract and the little pieces of step arithmetic.

A sampler is a plain function in the manner of k-diffusion:

    sample_x(model, x, sigmas, extra_args=None, callback=None, disable=None, **options) -> x

`model(x, sigma)` is the guided denoiser, returning the clean-latent estimate x0 for a batch x at a
[B] sigma; `x` starts as the noised latent at sigmas[0]; the result is the latent at sigmas[-1].
`extra_args["seed"]` seeds the per-step noise. `callback` receives a `StepInfo` once per step.
`disable` is k-diffusion's progress-bar switch, kept so samplers keep the signature custom code
calls them with; progress here goes through `callback`.

The engine serves flow models only (x = sigma * noise + (1 - sigma) * x0), so where ComfyUI branches
on the model type, these functions take its flow ("CONST") branch. Samplers written for the variance-
exploding parameterisation still solve the right ODE: dx/dsigma = (x - x0) / sigma holds for both.
The few whose noise injection assumes that parameterisation (ddpm, res_multistep_ancestral and its
cfg++ form, dpmpp_2s_ancestral_cfg_pp) keep it, as ComfyUI does; they do not sample a flow model's
distribution exactly, and reproducing ComfyUI's images takes precedence.
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict

import torch

from engine.diffusion.sampling.model_sampling import FlowModelSampling
from engine.diffusion.sampling.noise import NoiseSampler, default_noise_sampler


class Denoiser(Protocol):
    """The x0 predictor a sampler drives: one guided model evaluation per call."""

    model_sampling: FlowModelSampling

    @property
    def uncond_denoised(self) -> torch.Tensor | None:
        """The unguided (negative-prompt) x0 of the latest call; what cfg++ samplers step along."""
        ...

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor: ...


class StepInfo(TypedDict):
    i: int
    x: torch.Tensor
    sigma: torch.Tensor
    denoised: torch.Tensor


class StepCallback(Protocol):
    def __call__(self, info: StepInfo) -> None: ...


class SamplerFunction(Protocol):
    """The part of a sampler's signature every sampler shares.

    Sampler-specific keyword options (eta, s_noise, order, ...) come after these, each with a default;
    they are not listed here because a protocol's `**options: Any` would demand that every sampler
    accept any keyword, which none does.
    """

    def __call__(
        self,
        model: Denoiser,
        x: torch.Tensor,
        sigmas: torch.Tensor,
        extra_args: dict[str, Any] | None = None,
        callback: StepCallback | None = None,
        disable: bool | None = None,
    ) -> torch.Tensor: ...


def report(
    callback: StepCallback | None, i: int, x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor
) -> None:
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "denoised": denoised})


def seed_of(extra_args: dict[str, Any] | None) -> int | None:
    return None if extra_args is None else extra_args.get("seed")


def step_noise(
    x: torch.Tensor, extra_args: dict[str, Any] | None, noise_sampler: NoiseSampler | None
) -> NoiseSampler:
    """The caller's noise sampler, or the default one seeded from the run's seed."""
    return noise_sampler if noise_sampler is not None else default_noise_sampler(x, seed_of(extra_args))


def to_d(x: torch.Tensor, sigma: torch.Tensor, denoised: torch.Tensor) -> torch.Tensor:
    """The ODE derivative dx/dsigma = (x - x0) / sigma (for a flow model, the velocity)."""
    return (x - denoised) / sigma


def ancestral_step(sigma_from: Any, sigma_to: Any, eta: float = 1.0) -> tuple[Any, Any]:
    """The variance-exploding ancestral split of a step: (sigma_down to step to, sigma_up of noise to add).

    Python's `min` (not torch.minimum) on purpose: when sigma_from is infinite the second term is
    NaN and `min` keeps sigma_to, as ComfyUI relies on at sigma = 1 of a flow model.
    """
    if not eta:
        return sigma_to, 0.0
    sigma_up = min(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def flow_ancestral_step(
    sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The flow-model ancestral split: (sigma_down, signal rescale, renoise std).

    Step deterministically to sigma_down < sigma_next, then rescale the signal part from
    (1 - sigma_down) to (1 - sigma_next) and add fresh noise to bring the noise part to sigma_next.
    """
    sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    alpha_next, alpha_down = 1 - sigma_next, 1 - sigma_down
    renoise = (sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2) ** 0.5
    return sigma_down, alpha_next / alpha_down, renoise


def snr_safe(
    sigmas: torch.Tensor, model_sampling: FlowModelSampling, percent_offset: float = 1e-4
) -> torch.Tensor:
    """Samplers that work in half-log-SNR cannot start at sigma 1 (lambda = -inf): start a hair below."""
    if len(sigmas) > 1 and sigmas[0] >= 1:
        sigmas = sigmas.clone()
        sigmas[0] = model_sampling.percent_to_sigma(percent_offset)
    return sigmas


def h_phi_1(h: torch.Tensor) -> torch.Tensor:
    """h * phi_1(h) = e^h - 1 of exponential integrators."""
    return torch.expm1(h)


def h_phi_2(h: torch.Tensor) -> torch.Tensor:
    """h * phi_2(h) = (e^h - 1 - h) / h of exponential integrators."""
    return (torch.expm1(h) - h) / h


def log_time(sigma: torch.Tensor) -> torch.Tensor:
    """t = -log sigma, the time of the DPM-Solver++ samplers written for sigma alone (alpha = 1)."""
    return sigma.log().neg()


def first_order_exponential_step(
    x: torch.Tensor, t: torch.Tensor, t_to: torch.Tensor, h: torch.Tensor, x0: torch.Tensor
) -> torch.Tensor:
    """DPM-Solver++(1) in t = -log sigma, exact for x0 constant over a step of h (= t_to - t):
        x_to = sigma_to / sigma * x - (e^-h - 1) x0.

    The sigmas come back as e^-t and h is the caller's, as ComfyUI rounds them: e^-h is not reused
    for the ratio, and a half step's h / 2 is not t_half - t.
    """
    return (t_to.neg().exp() / t.neg().exp()) * x - (-h).expm1() * x0
