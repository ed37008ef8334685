"""Cancelling a job while a long prompt is being encoded stops the encoding at once, not after it.

A 600-word prompt is 8 CLIP windows, or one T5 sequence of 601 tokens (a 10,000-character one is
five times that): one long pass through the transformer. A cancel that arrives after its first
layer must leave every later layer unrun.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers.models.t5.modeling_t5 import T5Block

from engine.graph.cache import OutputCache
from engine.graph.execute import Executor, RunResult
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.nodes import conditioning, preview_any, text_encoders

LONG_PROMPT = "cat " * 600
"""600 single-token words: 8 CLIP windows, 601 T5 tokens."""

LAYERS = (CLIPEncoderLayer, T5Block)


@pytest.fixture
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    for module in (text_encoders, conditioning, preview_any):
        registry.register(module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS)
    return registry


@pytest.fixture
def cancel_after_first_layer() -> Iterator[tuple[threading.Event, list[str]]]:
    """An interrupt flag the first transformer layer to run sets (as a cancel arriving mid-encoding
    would), and the name of every layer run."""
    cancel = threading.Event()
    layers: list[str] = []

    def hook(module: torch.nn.Module, args: Any, output: Any) -> None:
        if isinstance(module, LAYERS):
            layers.append(type(module).__name__)
            cancel.set()

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    yield cancel, layers
    handle.remove()


def run_encoding(registry: NodeRegistry, loader: dict[str, Any], cancel: threading.Event) -> RunResult:
    prompt = {
        "1": loader,
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": LONG_PROMPT, "clip": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    validation = validate_prompt(registry, prompt)
    assert validation.ok, validation.error_body()
    return Executor(registry, OutputCache(max_bytes=0)).run(
        validation.validated, prompt_id="long", interrupt=cancel
    )


@pytest.mark.parametrize(
    ("loader", "first_layer"),
    [
        (
            {
                "class_type": "CLIPLoader",
                "inputs": {"clip_name": "clip_l.safetensors", "type": "stable_diffusion"},
            },
            "CLIPEncoderLayer",
        ),
        (
            {
                "class_type": "DualCLIPLoader",
                "inputs": {
                    "clip_name1": "t5xxl_fp16.safetensors",
                    "clip_name2": "clip_l.safetensors",
                    "type": "flux",
                },
            },
            "T5Block",
        ),
    ],
    ids=["clip-l-8-windows", "t5-601-tokens"],
)
def test_a_cancel_while_a_long_prompt_is_encoded_runs_no_further_layer(
    configured_folders, manager, registry, cancel_after_first_layer, loader, first_layer
):
    cancel, layers = cancel_after_first_layer

    result = run_encoding(registry, loader, cancel)

    assert result.status == "interrupted"
    assert result.failure is not None and result.failure.node_id == "2"
    assert layers == [first_layer], f"{len(layers) - 1} layers ran after the cancel"
