"""Sampling with ComfyUI's semantics: model sampling (sigma tables), schedulers, samplers, guiders."""
