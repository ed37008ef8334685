"""The built-in nodes, and the registry that holds them with the packages in `custom_nodes/`."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from engine.graph.registry import NodeRegistry, PackageReport
from engine.nodes import (
    canny,
    compositing,
    conditioning,
    conditioning_ops,
    differential_diffusion,
    edit_models,
    image,
    image_batch,
    image_transform,
    inpaint,
    latent,
    latent_ops,
    loaders,
    logic,
    mask,
    model_patch,
    preview_any,
    primitives,
    sampling,
    save_image_as,
    sigmas,
    strings,
    style_model,
    text_encoders,
    vae_tiled,
)

BUILTIN_MODULES: tuple[ModuleType, ...] = (
    primitives,
    preview_any,
    loaders,
    text_encoders,
    conditioning,
    conditioning_ops,
    edit_models,
    latent,
    latent_ops,
    sampling,
    sigmas,
    differential_diffusion,
    image,
    image_transform,
    image_batch,
    mask,
    compositing,
    canny,
    inpaint,
    vae_tiled,
    save_image_as,
    strings,
    style_model,
    model_patch,
    logic,
)


def create_registry(custom_node_dirs: Iterable[Path] = ()) -> tuple[NodeRegistry, list[PackageReport]]:
    """Built-in nodes first (custom packages never replace them), then each custom node folder."""
    registry = NodeRegistry()
    for module in BUILTIN_MODULES:
        registry.register(module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS)
    reports: list[PackageReport] = []
    for directory in custom_node_dirs:
        reports.extend(registry.load_custom_nodes(directory))
    return registry, reports
