"""Every built-in node that ComfyUI also has declares what ComfyUI's recorded /object_info declares.

The editor builds its widgets, and clients their requests, from these declarations, so an input's
name, order, type, default and bounds, a combo's values and the outputs must be ComfyUI's. Model-file
combos are left out: ComfyUI's recording ran with empty model folders.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.graph.object_info import object_info as engine_object_info
from engine.nodes import create_registry
from tests.comfy_fixtures import object_info

WIDGET_OPTIONS = (
    "default",
    "min",
    "max",
    "step",
    "round",
    "multiline",
    "dynamicPrompts",
    "control_after_generate",
)
"""The options that change a widget or a value's bounds (tooltips and display hints are free text)."""
FILE_COMBOS = {("VAELoader", "vae_name"), ("LoadImage", "image")}
"""Combos ComfyUI fills from folders (its recording lists only what it adds by itself)."""

ENGINE = engine_object_info(create_registry()[0])
SHARED = sorted(set(ENGINE) & set(object_info()))
ENGINE_ONLY = {"SaveImageAs"}
"""Built-in nodes of the engine's own; every other built-in node is one of ComfyUI's and is compared."""


def normalise(spec: list[Any]) -> tuple[Any, dict[str, Any]]:
    """(type or combo values, widget options) of one input, in either of ComfyUI's two spellings."""
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    if kind == "COMBO":
        kind = options.get("options")
    return kind, {key: options[key] for key in WIDGET_OPTIONS if key in options}


def comfy_file_combo(node: str, name: str, spec: list[Any]) -> bool:
    kind, options = spec[0], spec[1] if len(spec) > 1 else {}
    values = options.get("options") if kind == "COMBO" else kind
    return (node, name) in FILE_COMBOS or values == []


def test_the_engine_shares_the_core_nodes_with_comfyui() -> None:
    assert len(SHARED) >= 35, SHARED
    assert {"LoraLoader", "LoraLoaderModelOnly"} <= set(SHARED)
    assert {"ModelPatchLoader", "USOStyleReference", "ComfySwitchNode", "CustomCombo"} <= set(SHARED)


def test_every_built_in_node_but_the_engines_own_is_compared_with_comfyui() -> None:
    """A node meant to be ComfyUI's but misnamed would otherwise escape the comparison below."""
    assert set(ENGINE) - set(SHARED) == ENGINE_ONLY


@pytest.mark.parametrize("node", SHARED)
def test_node_declaration_is_comfyuis(node: str) -> None:
    ours, comfy = ENGINE[node], object_info()[node]
    for section in ("required", "optional"):
        assert ours["input_order"].get(section, []) == comfy["input_order"].get(section, []), section
        for name, spec in (comfy["input"].get(section) or {}).items():
            if comfy_file_combo(node, name, spec):
                continue
            assert normalise(ours["input"][section][name]) == normalise(spec), name
    assert ours["output"] == comfy["output"]
    assert ours["output_is_list"] == comfy["output_is_list"]
    assert ours["output_name"] == comfy["output_name"]
    assert ours["output_node"] == comfy["output_node"]
    assert ours["category"] == comfy["category"]
    assert ours["input"].get("hidden") == comfy["input"].get("hidden")
