"""Laying an API prompt out as an editor workflow (UI format), the reverse of `workflow.py`.

An endpoint published as an API prompt is shared as a file the official editor opens, so the prompt is
drawn as the editor would save it (COMFY.md §1): each node with its socket inputs and outputs, its
widget values in INPUT_TYPES order with the editor's "control after generate" slot after a seed (set to
"fixed", so a run in ComfyUI keeps the value the file holds), and a links array. Nodes are placed by a
layered layout: a node's column is the length of the longest chain of links feeding it, so every link
runs left to right. Converting the result back with `workflow_to_prompt` gives the prompt again: widget
inputs the prompt leaves out at the end of a node's list are left out of its values too (as an editor
older than those inputs saves them); one left out before a set one comes back at the default the
editor shows for it.

Editor node ids are integers; a prompt whose ids are not (subgraph ids "3:7", names) is renumbered,
and the map from prompt ids to editor ids is returned with the workflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.graph.node_def import InputSpec, NodeDefinition
from engine.graph.registry import NodeRegistry
from engine.graph.types import Prompt, is_link
from engine.graph.workflow import WorkflowError

WORKFLOW_VERSION = 0.4
COLUMN_WIDTH = 400
"""Horizontal distance between layers; a node is NODE_WIDTH wide, leaving room for the links."""
NODE_WIDTH = 320
ROW_GAP = 40
TITLE_HEIGHT = 30
SLOT_HEIGHT = 24
MARGIN = 50
CONTROL_FIXED = "fixed"


@dataclass(frozen=True)
class LaidOut:
    workflow: dict[str, Any]
    """The UI-format workflow."""
    ids: dict[str, int]
    """Prompt node id -> editor node id."""


def _editor_ids(prompt: Prompt) -> dict[str, int]:
    """The prompt's own ids when they are all plain integers (so bindings keep their node ids), else
    1, 2, 3... in the prompt's order."""
    if all(node_id.isascii() and node_id.isdigit() and node_id == str(int(node_id)) for node_id in prompt):
        return {node_id: int(node_id) for node_id in prompt}
    return {node_id: index for index, node_id in enumerate(prompt, start=1)}


def _unwrap(value: Any) -> Any:
    """A list widget value travels wrapped in API format (`{"__value__": [...]}`), bare in the editor."""
    if isinstance(value, Mapping) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def _shown_default(spec: InputSpec) -> Any:
    """What the editor's widget shows for an input the prompt does not set (or sets by a link)."""
    if "default" in spec.options:
        return spec.options["default"]
    if spec.choices:
        return spec.choices[0]
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec.type)


def _control_values(spec: InputSpec) -> list[Any]:
    """The editor-only values stored after a widget's own (mode, and a combo's filter text)."""
    return [CONTROL_FIXED, ""][: spec.control_values]


class _Layout:
    def __init__(self, prompt: Prompt, registry: NodeRegistry) -> None:
        self.prompt = prompt
        self.ids = _editor_ids(prompt)
        missing = sorted({node["class_type"] for node in prompt.values()} - set(registry))
        if missing:
            raise WorkflowError(
                f"the prompt uses node types this server does not have: {', '.join(missing)}", missing
            )
        self.definitions: dict[str, NodeDefinition] = {}
        for node in prompt.values():
            if node["class_type"] not in self.definitions:
                self.definitions[node["class_type"]] = registry.definition(node["class_type"])
        self.links: list[list[Any]] = []
        self.depths: dict[str, int] = {}

    def definition(self, node_id: str) -> NodeDefinition:
        return self.definitions[self.prompt[node_id]["class_type"]]

    def sources(self, node_id: str) -> list[tuple[str, str, int]]:
        """(input name, source node id, output slot) of each linked input, checked against the definitions."""
        found = []
        definition = self.definition(node_id)
        for name, value in self.prompt[node_id]["inputs"].items():
            if name not in definition.inputs:
                raise WorkflowError(
                    f"node {node_id} ({definition.class_type}) has an input '{name}' its definition does "
                    f"not declare ({', '.join(definition.inputs) or 'none'}), which the editor cannot show"
                )
            if not is_link(value):
                continue
            source, slot = str(value[0]), value[1]
            if source not in self.prompt:
                raise WorkflowError(
                    f"node {node_id} input '{name}' links to node {source}, which does not exist"
                )
            if not 0 <= slot < len(self.definition(source).return_types):
                raise WorkflowError(
                    f"node {node_id} input '{name}' links to output {slot} of node {source} "
                    f"({self.prompt[source]['class_type']}), which has no such output"
                )
            found.append((name, source, slot))
        return found

    def layers(self) -> dict[str, int]:
        """Each node's column: the longest chain of links into it (Kahn's order, so a prompt thousands
        of nodes deep needs no recursion); nodes left unordered sit on a cycle."""
        feeding = {node_id: [source for _, source, _ in self.sources(node_id)] for node_id in self.prompt}
        consumers: dict[str, list[str]] = {}
        for node_id, sources in feeding.items():
            for source in sources:
                consumers.setdefault(source, []).append(node_id)
        waiting = {node_id: len(sources) for node_id, sources in feeding.items()}
        ready = [node_id for node_id, count in waiting.items() if count == 0]
        depths = dict.fromkeys(ready, 0)
        while ready:
            current = ready.pop()
            for consumer in consumers.get(current, []):
                depths[consumer] = max(depths.get(consumer, 0), depths[current] + 1)
                waiting[consumer] -= 1
                if waiting[consumer] == 0:
                    ready.append(consumer)
        cyclic = [node_id for node_id, count in waiting.items() if count > 0]
        if cyclic:
            raise WorkflowError(f"the prompt's links form a cycle through node(s) {', '.join(cyclic)}")
        return depths

    def lay_out(self) -> LaidOut:
        self.depths = self.layers()
        order = sorted(self.prompt, key=lambda node_id: (self.depths[node_id], self.ids[node_id]))
        outgoing: dict[tuple[str, int], list[int]] = {}
        node_inputs: dict[str, list[dict[str, Any]]] = {}
        for node_id in order:
            linked = {name: (source, slot) for name, source, slot in self.sources(node_id)}
            ports: list[dict[str, Any]] = []
            for spec in self.definition(node_id).inputs.values():
                if spec.name in linked:
                    source, slot = linked[spec.name]
                    link_id = len(self.links) + 1
                    kind = self.definition(source).return_types[slot]
                    target_slot = len(ports)
                    self.links.append([link_id, self.ids[source], slot, self.ids[node_id], target_slot, kind])
                    outgoing.setdefault((source, slot), []).append(link_id)
                    port: dict[str, Any] = {"name": spec.name, "type": spec.type, "link": link_id}
                    if spec.is_widget:
                        port["widget"] = {"name": spec.name}
                    ports.append(port)
                elif not spec.is_widget:
                    ports.append({"name": spec.name, "type": spec.type, "link": None})
            node_inputs[node_id] = ports
        nodes = []
        column_bottom: dict[int, float] = {}
        for position, node_id in enumerate(order):
            node = self._node(node_id, position, node_inputs[node_id], outgoing)
            column = self.depths[node_id]
            top = column_bottom.get(column, MARGIN)
            node["pos"] = [MARGIN + column * COLUMN_WIDTH, top]
            column_bottom[column] = top + node["size"][1] + ROW_GAP
            nodes.append(node)
        workflow = {
            "last_node_id": max(self.ids.values(), default=0),
            "last_link_id": len(self.links),
            "nodes": nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
            "version": WORKFLOW_VERSION,
        }
        return LaidOut(workflow, dict(self.ids))

    def _node(
        self,
        node_id: str,
        order: int,
        ports: list[dict[str, Any]],
        outgoing: dict[tuple[str, int], list[int]],
    ) -> dict[str, Any]:
        prompt_node = self.prompt[node_id]
        definition = self.definition(node_id)
        widgets = definition.widgets
        inputs = prompt_node["inputs"]
        while widgets and widgets[-1].name not in inputs:
            widgets = widgets[:-1]  # as an editor older than the input saved it: the converter stops there
        values: list[Any] = []
        for spec in widgets:
            value = inputs.get(spec.name)
            shown = _shown_default(spec) if value is None or is_link(value) else _unwrap(value)
            values.extend([shown, *_control_values(spec)])
        outputs = [
            {
                "name": name,
                "type": kind,
                "links": outgoing.get((node_id, slot), []),
                "slot_index": slot,
            }
            for slot, (name, kind) in enumerate(
                zip(definition.return_names, definition.return_types, strict=False)
            )
        ]
        rows = max(len(ports), len(outputs)) + len(definition.widgets)
        node: dict[str, Any] = {
            "id": self.ids[node_id],
            "type": definition.class_type,
            "pos": [0, 0],
            "size": [NODE_WIDTH, TITLE_HEIGHT + SLOT_HEIGHT * max(rows, 1)],
            "flags": {},
            "order": order,
            "mode": 0,
            "inputs": ports,
            "outputs": outputs,
            "properties": {"Node name for S&R": definition.class_type},
            "widgets_values": values,
        }
        title = (prompt_node.get("_meta") or {}).get("title")
        if isinstance(title, str) and title and title != definition.display_name:
            node["title"] = title
        return node


def prompt_to_workflow(prompt: Prompt, registry: NodeRegistry) -> LaidOut:
    """The editor workflow drawing `prompt`; WorkflowError names a node type this server lacks, an input
    its definition does not declare, a link to a missing node or output, or a cycle."""
    return _Layout(prompt, registry).lay_out()
