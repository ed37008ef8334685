"""Requests and templates several test modules use: the seeds' sample requests (their JavaScript samples'
values) and a minimal model-free template to break in one way at a time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

AURA_SAMPLE = {
    "cfg": 5,
    "seed": 2425367,
    "shift": 1.73,
    "steps": 25,
    "width": 1024,
    "height": 1024,
    "prompt": "A mesmerizing 3D render displaying a vibrant, dark fantasy-inspired birthday message",
    "sampler": "uni_pc",
    "scheduler": "normal",
    "output_format": "webp",
    "output_quality": 80,
    "number_of_images": 1,
}
FLUX_PRO_SAMPLE = {
    "prompt": "A mesmerizing 4D rendering illustration masterpiece, capturing the name '1 million users'",
    "guidance": 3,
    "steps": 25,
    "interval": 2,
    "safety_tolerance": 2,
    "aspect_ratio": "1:1",
    "seed": 46588,
    "output_format": "webp",
    "output_quality": 80,
}
FLUX_SCHNELL_SAMPLE = {
    "prompt": "a bengal tiger in an astronaut suit on mars, cubist style holding a sign saying 'awesome'",
    "steps": 4,
    "seed": 123456789,
    "sampler_name": "euler",
    "scheduler": "normal",
    "samples": 1,
    "width": 1024,
    "height": 1024,
    "denoise": 1,
}

Template = dict[str, Any]

SOLID: Template = {
    "api": "segmind",
    "title": "Solid",
    "prompt": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "solid"}},
    },
    "output": {"node": "2", "format": {"field": "output_format"}},
    "fields": {
        "width": {"type": "integer", "minimum": 16, "maximum": 1024, "default": 64, "sets": [["1", "width"]]},
        "height": {
            "type": "integer",
            "minimum": 16,
            "maximum": 1024,
            "default": 64,
            "sets": [["1", "height"]],
        },
        "color": {"type": "integer", "minimum": 0, "maximum": 255, "default": 0, "sets": [["1", "color"]]},
        "batch": {
            "type": "integer",
            "minimum": 1,
            "maximum": 4,
            "default": 1,
            "affects_price": True,
            "sets": [["1", "batch_size"]],
        },
        "output_format": {"type": "string", "enum": ["png", "webp"], "default": "png"},
    },
    "pricing": {"base": 0.001, "multiply": [{"field": "batch"}]},
}


def write(directory: Path, name: str, template: Template) -> Path:
    path = directory / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(template))
    return path
