"""Checking a template against the node definitions: every request field must fit what it sets.

A field may only promise what the graph can take: it binds existing inputs of existing nodes, with a
type the input accepts, a range inside the input's range, and enum values among a combo's choices.
Then no request that passes `Endpoint.parse` can fail graph validation on a bound input, so request
errors always come back in the endpoint's own terms (field and bound), never as a node error.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

from engine.endpoints.errors import EndpointError
from engine.endpoints.fields import Field, InputRef, format_number
from engine.endpoints.spec import SAVE_NODE, Endpoint
from engine.graph.node_def import InputSpec, NodeDefinition
from engine.graph.registry import NodeRegistry
from engine.graph.types import WIDGET_TYPES, is_link

INPUT_TYPES_FOR: dict[str, frozenset[str]] = {
    "integer": frozenset({"INT", "FLOAT"}),
    "number": frozenset({"FLOAT"}),
    "string": frozenset({"STRING", "COMBO"}),
    "boolean": frozenset({"BOOLEAN"}),
}
"""Which node input types a request field of each type may set."""


class _Checker:
    def __init__(self, endpoint: Endpoint, registry: NodeRegistry) -> None:
        self.endpoint = endpoint
        self.registry = registry
        self.definitions: dict[str, NodeDefinition] = {}

    def fail(self, where: str, message: str) -> NoReturn:
        raise EndpointError(f"{self.endpoint.source}: {where}: {message}")

    def definition(self, node_id: str) -> NodeDefinition:
        class_type = self.endpoint.graph[node_id]["class_type"]
        if class_type not in self.definitions:
            self.definitions[class_type] = self.registry.definition(class_type)
        return self.definitions[class_type]

    def check(self) -> None:
        for node_id, node in self.endpoint.graph.items():
            if node["class_type"] not in self.registry:
                self.fail(f"node {node_id}", f"node type {node['class_type']} is not registered")
        self.check_output()
        seen: dict[InputRef, str] = {}
        for field in self.endpoint.fields.values():
            self.check_field(field, seen)

    def check_output(self) -> None:
        output = self.endpoint.output
        where = "output"
        if output.node not in self.endpoint.graph:
            self.fail(where, f"node {output.node} is not in the graph")
        images = self.definition(output.node).inputs.get("images")
        if images is None or images.type != "IMAGE":
            self.fail(where, f"node {output.node} has no IMAGE input named images (is it a SaveImage?)")
        if not is_link(self.endpoint.graph[output.node]["inputs"].get("images")):
            self.fail(where, f"node {output.node}'s images input must be linked to the image source")
        others = [
            node_id
            for node_id in self.endpoint.graph
            if node_id != output.node and self.definition(node_id).output_node
        ]
        if others:
            self.fail(
                where, f"the graph has other output nodes ({', '.join(others)}); keep only {output.node}"
            )
        if SAVE_NODE not in self.registry:
            self.fail(where, f"node type {SAVE_NODE} is not registered (endpoint outputs are saved with it)")
        save = self.registry.definition(SAVE_NODE).inputs
        fields = self.endpoint.fields
        if output.format_field:
            self.check_values(fields[output.format_field], save["format"], f"{SAVE_NODE}.format")
        elif output.format not in (save["format"].choices or ()):
            self.fail(where, f"format {output.format!r} is not one of {list(save['format'].choices or ())}")
        if output.quality_field:
            self.check_values(fields[output.quality_field], save["quality"], f"{SAVE_NODE}.quality")
        elif output.quality is not None:
            self.check_constant(output.quality, save["quality"], where, f"{SAVE_NODE}.quality")

    def check_field(self, field: Field, seen: dict[InputRef, str]) -> None:
        where = f"field '{field.name}'"
        derived = field.derive.targets.items() if field.derive else ()
        targets = [*field.sets, *(ref for _, refs in derived for ref in refs)]
        if not targets and not field.accepted_only and field.name not in self.endpoint.output.fields:
            self.fail(
                where,
                "sets no node input: bind it with sets or derive, use it as the output format or quality, "
                "or mark it accepted_only",
            )
        for ref in targets:
            if ref in seen:
                self.fail(where, f"input {ref} is already set by field '{seen[ref]}'")
            seen[ref] = field.name
        for ref in field.sets:
            self.check_values(field, self.input_spec(ref, where), self.describe(ref))
        for component, refs in derived:
            assert field.derive is not None
            for ref in refs:
                spec = self.input_spec(ref, where)
                for key, row in field.derive.table.items():
                    self.check_constant(
                        row[component], spec, f"{where}: derive row {key!r}", self.describe(ref)
                    )

    def describe(self, ref: InputRef) -> str:
        return f"{ref} ({self.endpoint.graph[ref.node]['class_type']}.{ref.input})"

    def input_spec(self, ref: InputRef, where: str) -> InputSpec:
        if ref.node not in self.endpoint.graph:
            self.fail(where, f"sets input {ref}, but the graph has no node {ref.node}")
        if ref.node == self.endpoint.output.node:
            self.fail(where, f"sets input {ref} of the output node, which the endpoint replaces")
        definition = self.definition(ref.node)
        spec = definition.inputs.get(ref.input)
        if spec is None:
            known = ", ".join(definition.inputs)
            self.fail(where, f"sets {ref}, but {definition.class_type} has no input {ref.input!r} ({known})")
        if spec.type not in WIDGET_TYPES:
            self.fail(where, f"sets {self.describe(ref)}, a {spec.type} socket that only takes a link")
        if is_link(self.endpoint.graph[ref.node]["inputs"].get(ref.input)):
            self.fail(where, f"sets {self.describe(ref)}, which the graph links to another node")
        return spec

    def check_values(self, field: Field, spec: InputSpec, target: str) -> None:
        """Every value the field accepts must be a value the input accepts."""
        where = f"field '{field.name}'"
        if spec.type not in INPUT_TYPES_FOR[field.type]:
            self.fail(where, f"is a {field.type} field, but {target} takes {spec.type}")
        if spec.type == "COMBO":
            if field.enum is None:
                self.fail(where, f"sets the combo {target}, so it needs an enum of its choices")
            outside = [value for value in field.enum if value not in (spec.choices or ())]
            if outside:
                self.fail(where, f"enum values {outside} are not choices of {target}")
            return
        if spec.type not in ("INT", "FLOAT"):
            return
        low, high = _field_range(field)
        input_low, input_high = spec.options.get("min"), spec.options.get("max")
        if input_low is not None:
            if low is None:
                self.fail(where, f"has no minimum, but {target} takes {format_number(input_low)} or more")
            if low < input_low:
                self.fail(
                    where,
                    f"minimum {format_number(low)} is below {target}'s minimum {format_number(input_low)}",
                )
        if input_high is not None:
            if high is None:
                self.fail(where, f"has no maximum, but {target} takes {format_number(input_high)} or less")
            if high > input_high:
                self.fail(
                    where,
                    f"maximum {format_number(high)} is above {target}'s maximum {format_number(input_high)}",
                )

    def check_constant(self, value: Any, spec: InputSpec, where: str, target: str) -> None:
        kinds = _input_types_of(value)
        if spec.type not in kinds:
            self.fail(where, f"value {value!r} does not fit {target}, which takes {spec.type}")
        if spec.type == "COMBO" and value not in (spec.choices or ()):
            self.fail(where, f"value {value!r} is not a choice of {target}")
        low, high = spec.options.get("min"), spec.options.get("max")
        if spec.type in ("INT", "FLOAT") and (
            (low is not None and value < low) or (high is not None and value > high)
        ):
            self.fail(where, f"value {value!r} is outside {target}'s range {low}..{high}")


def _field_range(field: Field) -> tuple[int | float | None, int | float | None]:
    if field.enum is not None:
        return min(field.enum), max(field.enum)
    return field.minimum, field.maximum


def _input_types_of(value: Any) -> Iterable[str]:
    if isinstance(value, bool):
        return ("BOOLEAN",)
    if isinstance(value, int):
        return ("INT", "FLOAT")
    if isinstance(value, float):
        return ("FLOAT",)
    if isinstance(value, str):
        return ("STRING", "COMBO")
    return ()


def check_bindings(endpoint: Endpoint, registry: NodeRegistry) -> None:
    """Raise EndpointError (naming the file and the field) for the first binding that does not fit."""
    _Checker(endpoint, registry).check()
