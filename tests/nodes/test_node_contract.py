"""Every built-in node's function can be called the way the executor calls it: by keyword, with every
input the node declares (required, optional, hidden), and needing no more than the required ones."""

from __future__ import annotations

import inspect

import pytest

from engine.nodes import create_registry

REGISTRY = create_registry()[0]


@pytest.mark.parametrize("class_type", sorted(REGISTRY))
def test_the_function_takes_the_declared_inputs_by_name(class_type: str) -> None:
    definition = REGISTRY.definition(class_type)
    parameters = {
        name: parameter
        for name, parameter in inspect.signature(
            getattr(definition.cls, definition.function)
        ).parameters.items()
        if name not in ("self", "cls")
    }
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    declared = set(definition.inputs) | set(definition.hidden)
    assert takes_any or declared <= set(parameters), declared - set(parameters)
    required = {name for name, spec in definition.inputs.items() if spec.section == "required"}
    needed = {
        name
        for name, p in parameters.items()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
    }
    assert needed <= required, needed - required
