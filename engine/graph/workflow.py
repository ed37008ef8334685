"""Converting an editor workflow (UI format) to an API prompt, as the web editor does before queueing.

The rules (COMFY.md §1, and the editor's own graph-to-prompt step): editor-only nodes are dropped
(notes, PrimitiveNode whose value goes into the inputs it feeds, Reroute which is followed through);
muted nodes (mode 2) are dropped with the links into them; bypassed nodes (mode 4) pass a matching
input through to what they fed; `widgets_values` map positionally onto a node's widget inputs, in
INPUT_TYPES order, skipping the editor's "control after generate" values; subgraph instances expand
into their inner nodes, with ids "outer:inner", their promoted widgets feeding the inner inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.graph.node_def import NodeDefinition
from engine.graph.registry import NodeRegistry
from engine.graph.types import Prompt

NOTE_NODES = frozenset({"Note", "MarkdownNote"})
PRIMITIVE_NODE = "PrimitiveNode"
REROUTE_NODE = "Reroute"
EDITOR_ONLY_NODES = NOTE_NODES | {PRIMITIVE_NODE, REROUTE_NODE}
MODE_MUTED = 2
MODE_BYPASSED = 4
SUBGRAPH_INPUT_NODE = -10
SUBGRAPH_OUTPUT_NODE = -20
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
MAX_SUBGRAPH_DEPTH = 32


class WorkflowError(ValueError):
    """A workflow that cannot be converted; `missing_node_types` lists classes no package provides."""

    def __init__(self, message: str, missing_node_types: list[str] | None = None) -> None:
        super().__init__(message)
        self.missing_node_types = missing_node_types or []


def is_workflow(data: Any) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list) and "links" in data


@dataclass(frozen=True)
class _Link:
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: str


def _parse_link(raw: Any) -> tuple[int, _Link]:
    if isinstance(raw, Mapping):
        values = [
            raw["id"],
            raw["origin_id"],
            raw["origin_slot"],
            raw["target_id"],
            raw["target_slot"],
            raw.get("type"),
        ]
    else:
        values = list(raw)
    link_id, origin_id, origin_slot, target_id, target_slot = (int(v) for v in values[:5])
    kind = values[5] if len(values) > 5 else "*"
    return link_id, _Link(
        origin_id, origin_slot, target_id, target_slot, str(kind) if kind is not None else "*"
    )


@dataclass
class _Scope:
    """The top-level graph or one subgraph definition."""

    nodes: dict[int, dict[str, Any]]
    links: dict[int, _Link]
    definition: Mapping[str, Any] | None = None


def _scope(data: Mapping[str, Any], definition: Mapping[str, Any] | None = None) -> _Scope:
    nodes = {int(node["id"]): node for node in data.get("nodes") or []}
    links = dict(_parse_link(raw) for raw in data.get("links") or [] if raw is not None)
    return _Scope(nodes, links, definition)


@dataclass
class _Flat:
    """One node of the flattened graph, with where it lives."""

    exec_id: str
    node: dict[str, Any]
    scope: _Scope
    path: tuple[str, ...]
    instance: _Flat | None
    mode: int

    @property
    def type(self) -> str:
        return str(self.node.get("type"))

    def inputs(self) -> list[dict[str, Any]]:
        return self.node.get("inputs") or []


@dataclass(frozen=True)
class _Value:
    """An input resolved to a constant (from a PrimitiveNode or a promoted subgraph widget)."""

    value: Any


@dataclass(frozen=True)
class _Source:
    exec_id: str
    slot: int


_Resolved = _Value | _Source | None


def _types_compatible(a: Any, b: Any) -> bool:
    """The editor's connection rule: empty or "*" matches anything; comma lists match on overlap."""
    if not a or not b or a == "*" or b == "*" or a == b:
        return True
    left = {t.strip().lower() for t in str(a).split(",")}
    right = {t.strip().lower() for t in str(b).split(",")}
    return not left.isdisjoint(right)


@dataclass
class _Converter:
    registry: NodeRegistry
    subgraphs: dict[str, Mapping[str, Any]]
    flat: dict[str, _Flat] = field(default_factory=dict)
    definitions: dict[str, NodeDefinition] = field(default_factory=dict)
    scopes: dict[str, _Scope] = field(default_factory=dict)
    promoted: dict[str, dict[str | None, Any]] = field(default_factory=dict)

    def definition(self, class_type: str) -> NodeDefinition | None:
        if class_type not in self.registry:
            return None
        if class_type not in self.definitions:
            self.definitions[class_type] = self.registry.definition(class_type)
        return self.definitions[class_type]

    def subgraph_scope(self, subgraph_id: str) -> _Scope:
        if subgraph_id not in self.scopes:
            definition = self.subgraphs[subgraph_id]
            self.scopes[subgraph_id] = _scope(definition, definition)
        return self.scopes[subgraph_id]

    # -- flattening ----------------------------------------------------------------------------------

    def flatten(self, scope: _Scope, path: tuple[str, ...], instance: _Flat | None, silenced: bool) -> None:
        if len(path) > MAX_SUBGRAPH_DEPTH:
            raise WorkflowError(
                f"subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} (a subgraph that contains itself?)"
            )
        for node_id, node in scope.nodes.items():
            exec_id = ":".join((*path, str(node_id)))
            mode = MODE_MUTED if silenced else int(node.get("mode") or 0)
            flat = _Flat(exec_id, node, scope, path, instance, mode)
            self.flat[exec_id] = flat
            if flat.type in self.subgraphs:
                inner = self.subgraph_scope(flat.type)
                self.flatten(inner, (*path, str(node_id)), flat, mode in (MODE_MUTED, MODE_BYPASSED))

    # -- resolving inputs ----------------------------------------------------------------------------

    def resolve_input(self, flat: _Flat, slot: int, visited: set[Any], target_type: Any = None) -> _Resolved:
        key = (flat.exec_id, "in", slot)
        if key in visited:
            raise WorkflowError(f"circular link resolution at input {slot} of node {flat.exec_id}")
        visited.add(key)
        inputs = flat.inputs()
        if slot >= len(inputs) or inputs[slot].get("link") is None:
            return None
        link_id = int(inputs[slot]["link"])
        link = flat.scope.links.get(link_id)
        if link is None:
            raise WorkflowError(
                f"node {flat.exec_id} input '{inputs[slot].get('name')}' uses missing link {link_id}"
            )
        wanted = target_type if target_type is not None else inputs[slot].get("type")
        if link.origin_id == SUBGRAPH_INPUT_NODE:
            return (
                self.resolve_subgraph_input(flat.instance, link.origin_slot, visited)
                if flat.instance
                else None
            )
        origin = self.flat.get(":".join((*flat.path, str(link.origin_id))))
        if origin is None:
            raise WorkflowError(f"link {link_id} comes from node {link.origin_id}, which does not exist")
        return self.resolve_output(origin, link.origin_slot, wanted, visited)

    def resolve_output(self, flat: _Flat, slot: int, target_type: Any, visited: set[Any]) -> _Resolved:
        key = (flat.exec_id, "out", slot)
        if key in visited:
            raise WorkflowError(f"circular link resolution at output {slot} of node {flat.exec_id}")
        visited.add(key)
        if flat.mode == MODE_BYPASSED:
            index = _bypass_input(flat, slot, target_type)
            return self.resolve_input(flat, index, visited) if index >= 0 else None
        if flat.type in self.subgraphs:
            return self.resolve_subgraph_output(flat, slot, target_type, visited)
        if flat.type == REROUTE_NODE:
            return self.resolve_input(flat, 0, visited, target_type)
        if flat.type == PRIMITIVE_NODE:
            values = flat.node.get("widgets_values") or []
            return _Value(values[0]) if values else None
        if flat.type in NOTE_NODES:
            return None
        return _Source(flat.exec_id, slot)

    def resolve_subgraph_input(self, instance: _Flat, index: int, visited: set[Any]) -> _Resolved:
        declared = list(self.subgraphs[instance.type].get("inputs") or [])
        if index >= len(declared):
            raise WorkflowError(f"subgraph instance {instance.exec_id} has no input {index}")
        name = declared[index].get("name")
        for slot, port in enumerate(instance.inputs()):
            if port.get("name") == name and port.get("link") is not None:
                return self.resolve_input(instance, slot, visited)
        promoted = self.promoted_values(instance)
        return _Value(promoted[name]) if name in promoted else None

    def resolve_subgraph_output(
        self, instance: _Flat, slot: int, target_type: Any, visited: set[Any]
    ) -> _Resolved:
        scope = self.subgraph_scope(instance.type)
        for link in scope.links.values():
            if link.target_id == SUBGRAPH_OUTPUT_NODE and link.target_slot == slot:
                if link.origin_id == SUBGRAPH_INPUT_NODE:
                    return self.resolve_subgraph_input(instance, link.origin_slot, visited)
                inner = self.flat.get(f"{instance.exec_id}:{link.origin_id}")
                if inner is None:
                    raise WorkflowError(f"subgraph {instance.type} output {slot} comes from a missing node")
                return self.resolve_output(inner, link.origin_slot, target_type, visited)
        return None

    # -- widgets -------------------------------------------------------------------------------------

    def promoted_values(self, instance: _Flat) -> dict[str | None, Any]:
        """Widget values shown on a subgraph instance, by subgraph input name (None for a nameless input,
        which the lookup by name in resolve_subgraph_input then matches).

        An input has a promoted widget when it feeds a widget input inside; the instance's
        `widgets_values` are those widgets in input order (no control values are stored for them).
        """
        if instance.exec_id in self.promoted:
            return self.promoted[instance.exec_id]
        values = instance.node.get("widgets_values")
        promoted: dict[str | None, Any] = {}
        if isinstance(values, Mapping):
            promoted = dict(values)
        elif isinstance(values, list) and values:
            names = [port.get("name") for port in self.promotable_inputs(instance.type)]
            promoted = dict(zip(names, values, strict=False))
        self.promoted[instance.exec_id] = promoted
        return promoted

    def promotable_inputs(self, subgraph_id: str, depth: int = 0) -> list[Mapping[str, Any]]:
        definition = self.subgraphs[subgraph_id]
        scope = self.subgraph_scope(subgraph_id)
        declared = list(definition.get("inputs") or [])
        promotable = []
        for index, port in enumerate(declared):
            targets = [
                link
                for link in scope.links.values()
                if link.origin_id == SUBGRAPH_INPUT_NODE and link.origin_slot == index
            ]
            if any(self.feeds_widget(scope, link, depth) for link in targets):
                promotable.append(port)
        return promotable

    def feeds_widget(self, scope: _Scope, link: _Link, depth: int) -> bool:
        target = scope.nodes.get(link.target_id)
        if target is None:
            return False
        inputs = target.get("inputs") or []
        if link.target_slot >= len(inputs):
            return False
        name = inputs[link.target_slot].get("name")
        target_type = str(target.get("type"))
        if target_type in self.subgraphs and depth < MAX_SUBGRAPH_DEPTH:
            return any(port.get("name") == name for port in self.promotable_inputs(target_type, depth + 1))
        definition = self.definition(target_type)
        spec = definition.inputs.get(name) if definition else None
        return spec is not None and spec.is_widget

    # -- conversion ------------------------------------------------------------------------------------

    def convert(self, workflow: Mapping[str, Any]) -> Prompt:
        self.flatten(_scope(workflow), (), None, False)
        missing: dict[str, list[str]] = {}
        prompt: Prompt = {}
        for flat in self.flat.values():
            if flat.type in EDITOR_ONLY_NODES or flat.type in self.subgraphs:
                continue
            if flat.mode in (MODE_MUTED, MODE_BYPASSED):
                continue
            definition = self.definition(flat.type)
            if definition is None:
                missing.setdefault(flat.type, []).append(flat.exec_id)
                continue
            inputs: dict[str, Any] = {
                name: _wrap(value)
                for name, value in widget_values(flat.node.get("widgets_values"), definition).items()
            }
            for slot, port in enumerate(flat.inputs()):
                resolved = self.resolve_input(flat, slot, set())
                if isinstance(resolved, _Value):
                    inputs[port["name"]] = _wrap(resolved.value)
                elif isinstance(resolved, _Source):
                    inputs[port["name"]] = [resolved.exec_id, resolved.slot]
            title = flat.node.get("title") or definition.display_name
            prompt[flat.exec_id] = {"inputs": inputs, "class_type": flat.type, "_meta": {"title": title}}
        if missing:
            listing = "; ".join(f"{kind} (node {', '.join(ids)})" for kind, ids in sorted(missing.items()))
            raise WorkflowError(
                f"the workflow uses node types this server does not have: {listing}", sorted(missing)
            )
        for node in prompt.values():  # links into dropped (muted) nodes are removed, as the editor does
            for name, value in list(node["inputs"].items()):
                if isinstance(value, list) and len(value) == 2 and value[0] not in prompt:
                    del node["inputs"][name]
        return prompt


def _bypass_input(flat: _Flat, slot: int, target_type: Any) -> int:
    """Which input a bypassed node passes through to output `slot` (the editor's choice), or -1."""
    inputs = flat.inputs()
    outputs = flat.node.get("outputs") or []
    if target_type in (None, "", "*"):
        return slot if slot < len(inputs) else (0 if inputs else -1)
    output_type = outputs[slot].get("type") if slot < len(outputs) else "*"
    if (
        slot < len(inputs)
        and _types_compatible(inputs[slot].get("type"), output_type)
        and _types_compatible(inputs[slot].get("type"), target_type)
    ):
        return slot
    for index, port in enumerate(inputs):
        if port.get("type") == target_type:
            return index
    for index, port in enumerate(inputs):
        if _types_compatible(port.get("type"), output_type) and _types_compatible(
            port.get("type"), target_type
        ):
            return index
    return -1


def widget_values(values: Any, definition: NodeDefinition) -> dict[str, Any]:
    if isinstance(values, Mapping):
        return {spec.name: values[spec.name] for spec in definition.widgets if spec.name in values}
    if not isinstance(values, list):
        return {}
    mapped: dict[str, Any] = {}
    position = 0
    for spec in definition.widgets:
        if position >= len(values):
            break
        mapped[spec.name] = values[position]
        position += 1
        # The editor stores a seed's "control after generate" mode right after it, and for a combo
        # with one also a filter string; saves from older editors carry one on INT widgets even
        # where today's definition declares none, and no value can be mistaken for a mode word.
        if position < len(values) and values[position] in CONTROL_VALUES:
            if spec.type == "INT":
                position += 1
            elif spec.type == "COMBO" and spec.control_values:
                position += spec.control_values
    return mapped


def _wrap(value: Any) -> Any:
    """A list widget value is wrapped so it is not mistaken for a link."""
    return {"__value__": value} if isinstance(value, list) else value


def collect_subgraphs(workflow: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    found: dict[str, Mapping[str, Any]] = {}
    pending = [workflow]
    while pending:
        container = pending.pop()
        for definition in (container.get("definitions") or {}).get("subgraphs") or []:
            if definition.get("id") not in found:
                found[str(definition["id"])] = definition
                pending.append(definition)
    return found


def workflow_to_prompt(workflow: Mapping[str, Any], registry: NodeRegistry) -> Prompt:
    try:
        return _Converter(registry, collect_subgraphs(workflow)).convert(workflow)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, WorkflowError):
            raise
        raise WorkflowError(f"malformed workflow: {exc!r}") from exc
