"""ComfyUI's recorded outputs (shared/reference/comfy-fixtures): what the engine is compared against.

The files were recorded by running unmodified ComfyUI 0.8.0 (see the fixtures' README): object_info,
sigma schedules, sampler trajectories on an analytic flow model, prepare_noise and validation results.
Tests read them here, so no expected value in the suite is a copy of the engine's own constants.
"""

from __future__ import annotations

import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("COMFY_FIXTURES", REPO.parent / "shared" / "reference" / "comfy-fixtures"))
"""The project's shared/ folder sits beside the repository (as on CI); COMFY_FIXTURES overrides it."""


def _file(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: set COMFY_FIXTURES to the comfy-fixtures folder")
    return path


@cache
def index(name: str) -> dict[str, Any]:
    """A fixture's JSON file (`samplers`, `sigmas`, `noise`, `validation`, `object_info`)."""
    return json.loads(_file(f"{name}.json").read_text())


@cache
def tensors(name: str) -> dict[str, torch.Tensor]:
    """A fixture's tensors (`samplers`, `sigmas`, `noise`), by key."""
    return load_file(_file(f"{name}.safetensors"))


def object_info() -> dict[str, Any]:
    """ComfyUI's GET /object_info body: every built-in node class's declaration."""
    return index("object_info")


def input_spec(node: str, name: str) -> tuple[str | list[Any], dict[str, Any]]:
    """(type, options) of one input of a ComfyUI node, required or optional. A combo comes back as its
    list of values whether ComfyUI declared it the V1 way (a list) or the V3 way ("COMBO", options)."""
    inputs = object_info()[node]["input"]
    spec = {**inputs.get("optional", {}), **inputs["required"]}[name]
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    if kind == "COMBO":
        return list(options["options"]), {k: v for k, v in options.items() if k != "options"}
    return kind, options
