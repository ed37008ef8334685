"""ComfySwitchNode and CustomCombo: their /object_info entries are ComfyUI's recorded ones key for key,
the switch evaluates only the branch it picks and passes any type on, and CustomCombo takes any choice."""

from __future__ import annotations

from typing import Any

import pytest

from engine.graph.execute import Executor, RunResult
from engine.graph.object_info import object_info
from engine.graph.validate import validate_prompt
from tests.comfy_fixtures import object_info as comfy_object_info


def run(executor: Executor, prompt: dict[str, Any]) -> RunResult:
    result = validate_prompt(executor.registry, prompt)
    assert result.validated is not None, result.node_errors_json()
    return executor.run(result.validated, prompt_id="p")


@pytest.mark.parametrize("node", ["ComfySwitchNode", "CustomCombo"])
def test_the_whole_object_info_entry_is_comfyuis(executor: Executor, node: str) -> None:
    """Every key, the match-type template and output_matchtypes included (the editor reads them to keep a
    switch's sockets to one type); only the module path differs, which names the engine's own file."""
    ours = dict(object_info(executor.registry)[node])
    comfy = dict(comfy_object_info()[node])
    ours.pop("python_module")
    comfy.pop("python_module")
    assert ours == comfy


def switch_graph(switch: bool) -> dict[str, Any]:
    return {
        "false": {"class_type": "Const", "inputs": {"value": 3}},
        "true": {"class_type": "Fail", "inputs": {"value": 1}},
        "switch": {
            "class_type": "ComfySwitchNode",
            "inputs": {"switch": switch, "on_false": ["false", 0], "on_true": ["true", 0]},
        },
        # An INT input: the switch's match-type output must be let through to it.
        "add": {"class_type": "Add", "inputs": {"a": ["switch", 0], "b": 10}},
        "out": {"class_type": "Echo", "inputs": {"value": ["add", 0]}},
    }


def test_the_switch_runs_only_the_branch_it_picks(executor: Executor) -> None:
    result = run(executor, switch_graph(False))
    assert result.status == "success"
    assert result.outputs["out"] == {"value": [13]}
    assert "true" not in result.executed, "the branch not taken (a failing node) never runs"


def test_the_switch_turned_on_runs_the_other_branch(executor: Executor) -> None:
    result = run(executor, switch_graph(True))
    assert result.status == "error"
    assert result.failure is not None and result.failure.node_id == "true"
    assert "false" not in result.executed


def test_both_switch_inputs_are_required_as_comfyui_0_8_declares_them(executor: Executor) -> None:
    prompt = switch_graph(False)
    del prompt["switch"]["inputs"]["on_true"]
    result = validate_prompt(executor.registry, prompt)
    assert result.validated is None
    errors = result.node_errors_json()["switch"]["errors"]
    assert [(e["type"], e["extra_info"]["input_name"]) for e in errors] == [
        ("required_input_missing", "on_true")
    ]


@pytest.mark.parametrize("choice", ["16:9", "an option only the editor knows", ""])
def test_custom_combo_passes_any_choice_on_as_its_string(executor: Executor, choice: str) -> None:
    prompt = {
        "combo": {"class_type": "CustomCombo", "inputs": {"choice": choice}},
        "out": {"class_type": "Echo", "inputs": {"value": ["combo", 0]}},
    }
    assert run(executor, prompt).outputs["out"] == {"value": [choice]}
