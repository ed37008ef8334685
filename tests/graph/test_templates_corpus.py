"""Conversion against a real corpus: the ~640 workflow templates shipped for ComfyUI's editor."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import comfyui_workflow_templates_json
import pytest
from PIL import Image

from engine import folders
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.graph.workflow import EDITOR_ONLY_NODES, collect_subgraphs, widget_values, workflow_to_prompt
from engine.nodes import create_registry

TEMPLATES = Path(comfyui_workflow_templates_json.__file__).parent / "templates"
CORE_TEMPLATES = {
    "flux_dev_checkpoint_example",
    "flux_dev_full_text_to_image",
    "flux_schnell",
    "sd3.5_simple_example",
    "sdxl_simple_example",
}
"""Text-to-image templates of model families the engine serves: each must convert and validate, so a
change that silently skips them (an unknown node type, a converter that gives up) fails here."""
MIN_COVERED = 13
"""comfyui-workflow-templates-json 0.1.123 (the test extras' minimum) gives 13 fully known templates."""
MIN_WIDGET_NODES = 800


def templates() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(TEMPLATES.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("nodes"), list):
            yield path.stem, data


def all_nodes(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    subgraphs = collect_subgraphs(workflow)
    return list(workflow["nodes"]) + [node for sub in subgraphs.values() for node in sub.get("nodes") or []]


def node_types(workflow: dict[str, Any]) -> set[str]:
    subgraphs = collect_subgraphs(workflow)
    return {n["type"] for n in all_nodes(workflow)} - set(subgraphs) - EDITOR_ONLY_NODES


@pytest.fixture(scope="module")
def builtin() -> NodeRegistry:
    return create_registry()[0]


def test_corpus_is_present() -> None:
    assert sum(1 for _ in templates()) > 500


def test_widget_values_map_to_the_names_the_editor_gives_them(
    builtin: NodeRegistry, report: Callable[[str], None]
) -> None:
    """Templates carry `widgets_values_named`; positional mapping (with seed control values skipped)
    must give the same names for every node type this server knows. A few entries are stale (they
    name values absent from `widgets_values` itself) and cannot serve as an answer."""
    checked = stale = 0
    for name, workflow in templates():
        for node in all_nodes(workflow):
            named = node.get("widgets_values_named")
            if named is None or node["type"] not in builtin:
                continue
            values = node.get("widgets_values") or []
            if any(value not in values for value in named.values()):
                stale += 1
                continue
            definition = builtin.definition(node["type"])
            widget_names = {spec.name for spec in definition.widgets}
            expected = {key: value for key, value in named.items() if key in widget_names}
            assert widget_values(values, definition) == expected, (name, node["id"])
            checked += 1
    assert checked >= MIN_WIDGET_NODES, f"only {checked} template nodes checked"
    report(f"widget mapping checked on {checked} template nodes ({stale} with stale names left out)")


def place_declared_models(workflow: dict[str, Any], models_dir: Path) -> None:
    """Templates declare the model files they expect; empty stand-ins let loader combos validate."""
    for node in all_nodes(workflow):
        for model in (node.get("properties") or {}).get("models") or []:
            path = models_dir / model["directory"] / model["name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()


IMAGE_LOADERS = {"LoadImage", "LoadImageMask"}


def place_input_images(workflow: dict[str, Any], input_dir: Path) -> None:
    """Templates name the images they load (the editor uploads them); small stand-ins let those validate."""
    for node in all_nodes(workflow):
        values = node.get("widgets_values") or []
        if node["type"] in IMAGE_LOADERS and values and isinstance(values[0], str):
            input_dir.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8)).save(input_dir / values[0], format="PNG")


def test_every_fully_known_template_converts_and_validates(
    builtin: NodeRegistry, tmp_path: Path, report: Callable[[str], None]
) -> None:
    covered, total = [], 0
    previous = folders.current()
    try:
        for name, workflow in templates():
            total += 1
            if not node_types(workflow) <= set(builtin):
                continue
            root = tmp_path / name
            folders.configure(base_dir=root)
            place_declared_models(workflow, root / "models")
            place_input_images(workflow, root / "input")
            prompt = workflow_to_prompt(workflow, builtin)
            result = validate_prompt(builtin, prompt)
            assert result.ok and not result.node_errors, (name, result.node_errors_json())
            covered.append(name)
    finally:
        folders.use(previous)
    listing = ", ".join(covered) or "none"
    report(f"workflow templates converted and validated: {len(covered)} of {total} ({listing})")
    assert set(covered) >= CORE_TEMPLATES, sorted(CORE_TEMPLATES - set(covered))
    assert len(covered) >= MIN_COVERED, listing
