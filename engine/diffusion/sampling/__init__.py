"""Sampling with ComfyUI's semantics, so a workflow gives the same image here for the same seed.

- model_sampling: sigma tables and the flow-model noise arithmetic (AuraFlow, Flux schnell/dev, SD3 shift).
- schedulers: the nine schedulers, (model sampling, steps) -> sigmas.
- samplers/: the 44 sampler functions by name, k-diffusion style, in small modules by family.
- noise: initial noise from a seed, per-step and Brownian-tree noise, the NOISE values.
- conditioning, guiders: CONDITIONING -> batched model inputs; CFG; the GUIDER values.
- sampler: the SAMPLER value, which runs a sampler function over a guided denoiser.
- sample: what KSampler and SamplerCustom(Advanced) do with LATENT dicts.
- preview: per-step progress with a latent -> RGB preview.
"""
