"""ComfyUI's own AuraFlow and Flux example workflows convert to exactly the prompts ComfyUI made of them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.graph.workflow import workflow_to_prompt
from engine.nodes import create_registry

EXAMPLES = Path(__file__).resolve().parents[1] / "diffusion" / "comfy_examples"
NAMES = sorted(path.name.removesuffix(".workflow.json") for path in EXAMPLES.glob("*.workflow.json"))


@pytest.mark.parametrize("name", NAMES)
def test_example_workflow_converts_to_its_prompt(name: str) -> None:
    registry, _ = create_registry()
    workflow = json.loads((EXAMPLES / f"{name}.workflow.json").read_text())
    expected = json.loads((EXAMPLES / f"{name}.prompt.json").read_text())
    converted = workflow_to_prompt(workflow, registry)
    without_titles = {
        node_id: {k: v for k, v in node.items() if k != "_meta"} for node_id, node in converted.items()
    }
    assert without_titles == expected


def test_all_four_examples_are_present() -> None:
    assert NAMES == [
        "aura_flow_0.2_example",
        "flux_dev_example",
        "flux_schnell_checkpoint_example",
        "flux_schnell_example",
    ]
