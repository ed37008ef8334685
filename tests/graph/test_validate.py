"""Validation reports ComfyUI's error types and shapes, naming node, input and bound."""

from __future__ import annotations

from typing import Any

import pytest

from engine.graph.registry import NodeRegistry
from engine.graph.validate import ValidationResult, validate_prompt


def typed(**inputs: Any) -> dict[str, Any]:
    values = {"count": 1, "strength": 0.5, "label": "x", "enabled": True, "mode": "fast"}
    return {"class_type": "Typed", "inputs": {**values, **inputs}}


def only_error(result: ValidationResult, node_id: str = "1") -> dict[str, Any]:
    errors = result.node_errors_json()[node_id]["errors"]
    assert len(errors) == 1, errors
    return errors[0]


def test_valid_prompt_casts_values_and_lists_outputs(registry: NodeRegistry) -> None:
    prompt = {"1": typed(count="7", strength=1, enabled="false", label=3)}
    result = validate_prompt(registry, prompt)
    assert result.ok and result.node_errors == {}
    assert result.validated is not None
    inputs = result.validated.prompt["1"]["inputs"]
    assert (inputs["count"], inputs["strength"], inputs["enabled"], inputs["label"]) == (7, 1.0, False, "3")
    assert result.validated.outputs == ("1",)


def test_unknown_class_is_invalid_prompt(registry: NodeRegistry) -> None:
    result = validate_prompt(registry, {"5": {"class_type": "NoSuchNode", "inputs": {}}})
    body = result.error_body()
    assert body["error"]["type"] == "invalid_prompt"
    assert "NoSuchNode" in body["error"]["message"] and body["error"]["details"] == "Node ID '#5'"
    assert body["node_errors"] == {}


def test_missing_class_type_is_invalid_prompt(registry: NodeRegistry) -> None:
    result = validate_prompt(registry, {"5": {"inputs": {}}})
    assert result.error is not None and result.error.type == "invalid_prompt"
    assert "class_type" in result.error.message


def test_no_output_node(registry: NodeRegistry) -> None:
    result = validate_prompt(registry, {"1": {"class_type": "Const", "inputs": {"value": 1}}})
    assert result.error_body()["error"]["type"] == "prompt_no_outputs"


def test_missing_required_input(registry: NodeRegistry) -> None:
    prompt = {"1": typed()}
    del prompt["1"]["inputs"]["mode"]
    result = validate_prompt(registry, prompt)
    assert result.error is not None and result.error.type == "prompt_outputs_failed_validation"
    error = only_error(result)
    assert error["type"] == "required_input_missing"
    assert error["extra_info"]["input_name"] == "mode"


@pytest.mark.parametrize(
    ("inputs", "kind", "fragment"),
    [
        ({"count": 0}, "value_smaller_than_min", "smaller than min of 1"),
        ({"count": 11}, "value_bigger_than_max", "bigger than max of 10"),
        ({"strength": 1.5}, "value_bigger_than_max", "bigger than max of 1.0"),
        ({"strength": -0.1}, "value_smaller_than_min", "smaller than min of 0.0"),
        ({"mode": "medium"}, "value_not_in_list", "Value not in list"),
        ({"count": "many"}, "invalid_input_type", "INT"),
        ({"count": 2.5}, "invalid_input_type", "INT"),
        ({"strength": "nan"}, "invalid_input_type", "FLOAT"),
        ({"enabled": "maybe"}, "invalid_input_type", "BOOLEAN"),
        ({"label": {"a": 1}}, "invalid_input_type", "STRING"),
    ],
)
def test_constant_errors_name_input_and_bound(
    registry: NodeRegistry, inputs: dict[str, Any], kind: str, fragment: str
) -> None:
    result = validate_prompt(registry, {"1": typed(**inputs)})
    error = only_error(result)
    assert error["type"] == kind
    assert fragment in error["message"]
    name = next(iter(inputs))
    assert error["extra_info"]["input_name"] == name
    assert name in error["details"]
    assert result.node_errors_json()["1"]["class_type"] == "Typed"


def test_combo_error_lists_the_choices(registry: NodeRegistry) -> None:
    error = only_error(validate_prompt(registry, {"1": typed(mode="medium")}))
    assert error["details"] == "mode: 'medium' not in ['fast', 'slow']"


@pytest.mark.parametrize(
    ("link", "fragment"),
    [
        (["9", 0], "does not exist"),
        (["2", 3], "has no output 3"),
        (["2"], "length-2 list"),
        (["2", "x"], "length-2"),
    ],
)
def test_bad_links(registry: NodeRegistry, link: list[Any], fragment: str) -> None:
    prompt = {"1": typed(count=link), "2": {"class_type": "Const", "inputs": {"value": 1}}}
    error = only_error(validate_prompt(registry, prompt))
    assert error["type"] == "bad_linked_input"
    assert fragment in error["message"]
    assert error["extra_info"]["input_name"] == "count"


def test_return_type_mismatch(registry: NodeRegistry) -> None:
    prompt = {"1": typed(), "2": typed()}
    prompt["1"]["inputs"]["image"] = ["2", 0]  # LATENT into IMAGE
    error = only_error(validate_prompt(registry, prompt))
    assert error["type"] == "return_type_mismatch"
    assert error["details"] == "image, received_type(LATENT) mismatch input_type(IMAGE)"


def test_comma_separated_and_wildcard_types_match(registry: NodeRegistry) -> None:
    prompt = {"1": typed(), "2": typed(), "3": {"class_type": "Echo", "inputs": {"value": ["2", 0]}}}
    prompt["1"]["inputs"]["image"] = ["2", 1]  # "IMAGE,MASK" overlaps "IMAGE"
    assert validate_prompt(registry, prompt).node_errors == {}


def test_custom_validation(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "Even", "inputs": {"value": 3}},
        "2": {"class_type": "Echo", "inputs": {"value": ["1", 0]}},
    }
    error = only_error(validate_prompt(registry, prompt))
    assert error["type"] == "custom_validation_failed"
    # ComfyUI names the input VALIDATE_INPUTS was given: "image - Invalid image file: missing.png" in
    # its recorded answer (comfy-fixtures/validation.json, validate_inputs_returns_message).
    assert error["details"] == "value - value must be even, got 3"
    assert error["extra_info"] == {"input_name": "value"}


def test_exception_during_validation(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "BrokenValidator", "inputs": {"value": 2}},
        "2": {"class_type": "Echo", "inputs": {"value": ["1", 0]}},
    }
    error = only_error(validate_prompt(registry, prompt))
    assert error["type"] == "exception_during_validation"
    assert error["details"] == "validator crashed"


def test_cycles_are_rejected(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "Add", "inputs": {"a": ["2", 0], "b": 1}},
        "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}},
        "3": {"class_type": "Echo", "inputs": {"value": ["1", 0]}},
    }
    result = validate_prompt(registry, prompt)
    assert not result.ok
    errors = result.node_errors_json()
    assert {e["extra_info"]["exception_type"] for n in ("1", "2") for e in errors[n]["errors"]} == {
        "DependencyCycleError"
    }
    assert errors["1"]["dependent_outputs"] == ["3"]


def test_errors_only_stop_the_outputs_that_depend_on_them(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 5000}},
        "2": {"class_type": "Echo", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Const", "inputs": {"value": 1}},
        "4": {"class_type": "Echo", "inputs": {"value": ["3", 0]}},
    }
    result = validate_prompt(registry, prompt)
    assert result.ok and result.validated is not None
    assert result.validated.outputs == ("4",)
    assert result.node_errors_json()["1"]["dependent_outputs"] == ["2"]


def test_partial_execution_targets(registry: NodeRegistry) -> None:
    prompt = {
        "1": {"class_type": "Const", "inputs": {"value": 5000}},
        "2": {"class_type": "Echo", "inputs": {"value": ["1", 0]}},
        "3": {"class_type": "Echo", "inputs": {"value": 1}},
    }
    result = validate_prompt(registry, prompt, targets=["3"])
    assert result.validated is not None and result.validated.outputs == ("3",)
    assert result.node_errors == {}


def test_wrapped_list_values_are_not_links(registry: NodeRegistry) -> None:
    prompt = {"1": {"class_type": "Echo", "inputs": {"value": {"__value__": [1, 2]}}}}
    result = validate_prompt(registry, prompt)
    assert result.validated is not None
    assert result.validated.prompt["1"]["inputs"]["value"] == [1, 2]


def test_deep_chain_validates_without_recursion_limits(registry: NodeRegistry) -> None:
    prompt: dict[str, Any] = {"0": {"class_type": "Const", "inputs": {"value": 1}}}
    for i in range(1, 5000):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt["out"] = {"class_type": "Echo", "inputs": {"value": ["4999", 0]}}
    assert validate_prompt(registry, prompt).ok
