"""LoRA and LyCORIS files applied to the diffusion models and text encoders (ComfyUI's LoraLoader).

- adapters: a file's tensors grouped into one change per layer (LoRA, LoHa, LoKr, differences).
- targets: where each layer a file may name lives in the engine's modules, under ComfyUI's names.
- patches: applying changes to a resident module in place, and undoing them for the next run.
- apply: reading a file and making patched MODEL and CLIP views of it, with a report of what fit.

The submodules are imported by name (this package imports none of them), so the model and text-encoder
modules can use `patches` without importing the key mapping, which imports them.
"""
