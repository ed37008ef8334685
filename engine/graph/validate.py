"""Validating an API-format prompt before it runs, with ComfyUI's error types and shapes (COMFY.md §2).

Each node is checked on its own (inputs present, links well formed and type-compatible, constants
castable and within bounds, the class's own VALIDATE_INPUTS), then validity flows downstream: an
output node runs only if everything it depends on is valid. Casting happens here, so the executor
receives values of the declared types. Every error names the node (the key of `node_errors`), the
input (`extra_info.input_name`) and, for bounds, the bound.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from engine.graph.node_def import InputSpec, NodeDefinition
from engine.graph.registry import NodeRegistry
from engine.graph.types import NodeId, Prompt, PromptNode, as_link, is_link, types_match

COMBO_LIST_REPORT_LIMIT = 20
"""Longer option lists (model file names) are summarised rather than echoed back."""


@dataclass(frozen=True)
class ValidationError:
    type: str
    message: str
    details: str = ""
    extra_info: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "details": self.details,
            "extra_info": dict(self.extra_info),
        }


@dataclass
class NodeErrors:
    class_type: str
    errors: list[ValidationError] = field(default_factory=list)
    dependent_outputs: list[NodeId] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "errors": [error.to_json() for error in self.errors],
            "dependent_outputs": self.dependent_outputs,
            "class_type": self.class_type,
        }


@dataclass(frozen=True)
class ValidatedPrompt:
    """A prompt whose constants are cast to their declared types, and the outputs that may run."""

    prompt: Prompt
    outputs: tuple[NodeId, ...]


@dataclass
class ValidationResult:
    error: ValidationError | None
    node_errors: dict[NodeId, NodeErrors]
    validated: ValidatedPrompt | None

    @property
    def ok(self) -> bool:
        return self.validated is not None

    def node_errors_json(self) -> dict[str, Any]:
        return {node_id: errors.to_json() for node_id, errors in self.node_errors.items()}

    def error_body(self) -> dict[str, Any]:
        """ComfyUI's HTTP 400 body."""
        assert self.error is not None
        return {"error": self.error.to_json(), "node_errors": self.node_errors_json()}


def _invalid_prompt(message: str, node_id: NodeId) -> ValidationResult:
    error = ValidationError("invalid_prompt", message, f"Node ID '#{node_id}'")
    return ValidationResult(error, {}, None)


class _CastError(ValueError):
    pass


def _cast(spec: InputSpec, value: Any) -> Any:
    """Declared type -> Python type; stricter than ComfyUI where its cast would silently mislead
    (bool("false") is True, int(2.7) is 2, float("nan") passes every bound)."""
    kind = spec.type
    if kind == "INT":
        if isinstance(value, bool):
            raise _CastError("expected an integer, got a boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError as exc:  # int()'s own message, as ComfyUI reports it
                raise _CastError(str(exc)) from exc
        raise _CastError(f"expected an integer, got {value!r}")
    if kind == "FLOAT":
        if isinstance(value, bool):
            raise _CastError("expected a number, got a boolean")
        try:
            number = float(value) if isinstance(value, int | float | str) else None
        except (ValueError, OverflowError) as exc:  # float()'s own message, as ComfyUI reports it
            raise _CastError(str(exc)) from exc
        if number is None or not math.isfinite(number):
            raise _CastError(f"expected a finite number, got {value!r}")
        return number
    if kind == "STRING":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _CastError(f"expected a string, got {type(value).__name__}")
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if value in (0, 1) and isinstance(value, int):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        raise _CastError(f"expected true or false, got {value!r}")
    return value


def _input_config(spec: InputSpec) -> Any:
    """The input's declaration as ComfyUI reports it: always [type, options], options {} when none."""
    if spec.choices is not None and len(spec.choices) > COMBO_LIST_REPORT_LIMIT:
        return None
    return [spec.declared[0], spec.declared[1] if len(spec.declared) > 1 else {}]


def _check_constant(spec: InputSpec, value: Any, check_bounds: bool) -> tuple[Any, ValidationError | None]:
    if isinstance(value, dict) and "__value__" in value:
        value = value["__value__"]
    extra = {"input_name": spec.name, "input_config": _input_config(spec), "received_value": value}
    try:
        value = _cast(spec, value)
    except _CastError as exc:
        return value, ValidationError(
            "invalid_input_type",
            f"Failed to convert an input value to a {spec.type} value",
            f"{spec.name}, {value}, {exc}",
            {**extra, "exception_message": str(exc)},
        )
    if not check_bounds:
        return value, None
    if spec.type in ("INT", "FLOAT"):
        low, high = spec.options.get("min"), spec.options.get("max")
        if low is not None and value < low:
            return value, ValidationError(
                "value_smaller_than_min", f"Value {value} smaller than min of {low}", spec.name, extra
            )
        if high is not None and value > high:
            return value, ValidationError(
                "value_bigger_than_max", f"Value {value} bigger than max of {high}", spec.name, extra
            )
    if spec.choices is not None and value not in spec.choices:
        options = (
            f"(list of length {len(spec.choices)})"
            if len(spec.choices) > COMBO_LIST_REPORT_LIMIT
            else str(list(spec.choices))
        )
        return value, ValidationError(
            "value_not_in_list", "Value not in list", f"{spec.name}: '{value}' not in {options}", extra
        )
    return value, None


class _Validator:
    def __init__(self, registry: NodeRegistry, prompt: Mapping[NodeId, PromptNode]) -> None:
        self.registry = registry
        self.prompt = prompt
        self.definitions: dict[str, NodeDefinition] = {}
        self.cast: Prompt = {}

    def definition(self, node_id: NodeId) -> NodeDefinition:
        class_type = self.prompt[node_id]["class_type"]
        if class_type not in self.definitions:
            self.definitions[class_type] = self.registry.definition(class_type)
        return self.definitions[class_type]

    def sources(self, node_id: NodeId) -> list[NodeId]:
        """Existing nodes this node links to (malformed links are reported by check_node)."""
        found = []
        for value in self.prompt[node_id]["inputs"].values():
            if is_link(value):
                source, _ = as_link(value)
                if source in self.prompt:
                    found.append(source)
        return found

    def check_node(self, node_id: NodeId) -> list[ValidationError]:
        """Everything wrong with this node by itself; fills in its cast inputs."""
        node = self.prompt[node_id]
        definition = self.definition(node_id)
        errors: list[ValidationError] = []
        inputs = dict(node["inputs"])
        received_types: dict[str, str] = {}
        validate_params = definition.validate_params or frozenset()
        takes_kwargs = "*" in validate_params

        for spec in definition.inputs.values():
            if spec.name not in inputs:
                if spec.section == "required":
                    errors.append(
                        ValidationError(
                            "required_input_missing",
                            "Required input is missing",
                            spec.name,
                            {"input_name": spec.name},
                        )
                    )
                continue
            value = inputs[spec.name]
            if isinstance(value, list):
                error = self.check_link(spec, value)
                if error is not None:
                    errors.append(error)
                else:
                    source, slot = as_link(value)
                    received_types[spec.name] = self.definition(source).return_types[slot]
                continue
            check_bounds = spec.name not in validate_params or takes_kwargs
            inputs[spec.name], error = _check_constant(spec, value, check_bounds)
            if error is not None:
                errors.append(error)

        self.cast[node_id] = {**node, "inputs": inputs}
        if definition.validate_params is not None and not errors:
            errors.extend(self.custom_validation(definition, inputs, received_types))
        return errors

    def check_link(self, spec: InputSpec, value: list[Any]) -> ValidationError | None:
        extra = {"input_name": spec.name, "input_config": _input_config(spec), "received_value": value}
        if not is_link(value):
            return ValidationError(
                "bad_linked_input",
                "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                spec.name,
                extra,
            )
        source, slot = as_link(value)
        if source not in self.prompt:
            return ValidationError(
                "bad_linked_input",
                f"Linked node {source} does not exist",
                f"{spec.name}: [{source}, {slot}]",
                extra,
            )
        outputs = self.definition(source).return_types
        if not 0 <= slot < len(outputs):
            return ValidationError(
                "bad_linked_input",
                f"Linked node {source} has no output {slot} (it has {len(outputs)})",
                f"{spec.name}: [{source}, {slot}]",
                extra,
            )
        received = outputs[slot]
        if not types_match(received, spec.type):
            return ValidationError(
                "return_type_mismatch",
                "Return type mismatch between linked nodes",
                f"{spec.name}, received_type({received}) mismatch input_type({spec.type})",
                {
                    "input_name": spec.name,
                    "input_config": extra["input_config"],
                    "received_type": received,
                    "linked_node": value,
                },
            )
        return None

    def custom_validation(
        self, definition: NodeDefinition, inputs: Mapping[str, Any], received_types: Mapping[str, str]
    ) -> list[ValidationError]:
        params = definition.validate_params or frozenset()
        arguments = {
            name: value
            for name, value in inputs.items()
            if not isinstance(value, list) and ("*" in params or name in params)
        }
        if "input_types" in params:
            arguments["input_types"] = dict(received_types)
        try:
            result = definition.cls.VALIDATE_INPUTS(**arguments)
        except Exception as exc:
            return [
                ValidationError(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(exc),
                    {
                        "exception_type": type(exc).__name__,
                        "traceback": traceback.format_tb(exc.__traceback__),
                    },
                )
            ]
        if result is True:
            return []
        reason = "" if result is False else str(result)
        if not arguments:
            return [ValidationError("custom_validation_failed", "Custom validation failed for node", reason)]
        return [  # ComfyUI files the refusal under each input VALIDATE_INPUTS was given
            ValidationError(
                "custom_validation_failed",
                "Custom validation failed for node",
                f"{name} - {reason}" if reason else name,
                {"input_name": name},
            )
            for name in arguments
        ]


def _walk(validator: _Validator, outputs: Iterable[NodeId]) -> tuple[list[NodeId], list[list[NodeId]]]:
    """Nodes reachable from `outputs`, upstream first, and any dependency cycles met on the way."""
    order: list[NodeId] = []
    state: dict[NodeId, int] = {}  # 1: on the current path, 2: finished
    cycles: list[list[NodeId]] = []
    for root in outputs:
        if root in state:
            continue
        path: list[NodeId] = [root]
        stack = [iter(validator.sources(root))]
        state[root] = 1
        while stack:
            source = next(stack[-1], None)
            if source is None:
                stack.pop()
                finished = path.pop()
                state[finished] = 2
                order.append(finished)
            elif state.get(source) == 1:
                cycles.append([*path[path.index(source) :], source])
            elif source not in state:
                state[source] = 1
                path.append(source)
                stack.append(iter(validator.sources(source)))
    return order, cycles


def validate_prompt(
    registry: NodeRegistry, prompt: Mapping[NodeId, Any], targets: Iterable[NodeId] | None = None
) -> ValidationResult:
    """Check a prompt; `targets` restricts which output nodes run (ComfyUI's partial execution)."""
    for node_id, node in prompt.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            return _invalid_prompt(
                "Cannot execute because a node is missing the class_type property.", node_id
            )
        if node["class_type"] not in registry:
            return _invalid_prompt(
                f"Cannot execute because node {node['class_type']} does not exist.", node_id
            )
        if not isinstance(node.get("inputs", {}), Mapping):
            return _invalid_prompt("Cannot execute because a node's inputs are not an object.", node_id)
    # cast: the loop above has checked each node's class_type and inputs, which the JSON cannot promise
    normalized: dict[NodeId, PromptNode] = {
        str(node_id): cast(PromptNode, {**node, "inputs": dict(node.get("inputs", {}))})
        for node_id, node in prompt.items()
    }
    validator = _Validator(registry, normalized)

    wanted = None if targets is None else {str(t) for t in targets}
    outputs = [
        node_id
        for node_id in normalized
        if validator.definition(node_id).output_node and (wanted is None or node_id in wanted)
    ]
    if not outputs:
        return ValidationResult(ValidationError("prompt_no_outputs", "Prompt has no outputs"), {}, None)

    order, cycles = _walk(validator, outputs)
    local_errors = {node_id: validator.check_node(node_id) for node_id in order}
    for cycle in cycles:
        message = " -> ".join(cycle)
        for node_id in cycle[:-1]:
            local_errors[node_id].append(
                ValidationError(
                    "exception_during_validation",
                    "Dependency cycle detected",
                    message,
                    {"exception_type": "DependencyCycleError", "cycle": cycle},
                )
            )

    valid: dict[NodeId, bool] = {}
    for node_id in order:  # upstream first, so sources are decided before their consumers
        valid[node_id] = not local_errors[node_id] and all(
            valid.get(s, False) for s in validator.sources(node_id)
        )

    node_errors: dict[NodeId, NodeErrors] = {}
    for node_id, errors in local_errors.items():
        if errors:
            node_errors[node_id] = NodeErrors(normalized[node_id]["class_type"], errors)
    if node_errors:
        for output in outputs:
            for node_id in _upstream(validator, output):
                if node_id in node_errors:
                    node_errors[node_id].dependent_outputs.append(output)

    good = tuple(output for output in outputs if valid[output])
    if not good:
        error = ValidationError("prompt_outputs_failed_validation", "Prompt outputs failed validation")
        return ValidationResult(error, node_errors, None)
    return ValidationResult(None, node_errors, ValidatedPrompt(validator.cast, good))


def _upstream(validator: _Validator, output: NodeId) -> set[NodeId]:
    seen = {output}
    stack = [output]
    while stack:
        for source in validator.sources(stack.pop()):
            if source not in seen:
                seen.add(source)
                stack.append(source)
    return seen
