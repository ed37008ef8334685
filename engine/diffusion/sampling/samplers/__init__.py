"""Every sampler of ComfyUI's KSampler, one function each, registered by name (COMFY.md §7)."""

from __future__ import annotations

from engine.diffusion.sampling.samplers import (
    cfg_pp,
    dpm_solver,
    dpmpp,
    er_sde,
    euler,
    exponential,
    multistep,
    renoise,
    sa_solver,
    uni_pc,
)
from engine.diffusion.sampling.samplers.common import Denoiser, SamplerFunction, StepCallback, StepInfo
from engine.diffusion.sampling.samplers.registry import SAMPLERS, SamplerSpec, register

SAMPLER_NAMES: list[str] = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "euler_ancestral_cfg_pp",
    "heun",
    "heunpp2",
    "exp_heun_2_x0",
    "exp_heun_2_x0_sde",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_sde",
    "dpmpp_sde_gpu",
    "dpmpp_2m",
    "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde",
    "dpmpp_2m_sde_gpu",
    "dpmpp_2m_sde_heun",
    "dpmpp_2m_sde_heun_gpu",
    "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu",
    "ddpm",
    "lcm",
    "ipndm",
    "ipndm_v",
    "deis",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "er_sde",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
    "ddim",
    "uni_pc",
    "uni_pc_bh2",
]
"""In ComfyUI's order: the order users see in the `sampler_name` combo."""

if set(SAMPLER_NAMES) != set(SAMPLERS) or len(SAMPLER_NAMES) != len(SAMPLERS):
    raise RuntimeError(
        f"sampler registry out of step with SAMPLER_NAMES: {sorted(set(SAMPLERS) ^ set(SAMPLER_NAMES))}"
    )

__all__ = [
    "SAMPLERS",
    "SAMPLER_NAMES",
    "Denoiser",
    "SamplerFunction",
    "SamplerSpec",
    "StepCallback",
    "StepInfo",
    "cfg_pp",
    "dpm_solver",
    "dpmpp",
    "er_sde",
    "euler",
    "exponential",
    "multistep",
    "register",
    "renoise",
    "sa_solver",
    "uni_pc",
]
