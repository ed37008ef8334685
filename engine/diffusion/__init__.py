"""Models: detection, loading, residency and sampling (torch, diffusers, transformers live here)."""
