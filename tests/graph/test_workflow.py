"""UI workflow -> API prompt conversion, rule by rule, as the editor performs it."""

from __future__ import annotations

from typing import Any

import pytest

from engine.graph.registry import NodeRegistry
from engine.graph.workflow import WorkflowError, workflow_to_prompt


class Builder:
    """Builds UI-format workflows the way the editor saves them."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []

    def node(
        self,
        node_id: int,
        kind: str,
        widgets: list[Any] | None = None,
        inputs: list[tuple[str, str]] = (),
        outputs: list[str] = (),
        mode: int = 0,
        **extra: Any,
    ) -> int:
        self.nodes.append(
            {
                "id": node_id,
                "type": kind,
                "mode": mode,
                "inputs": [{"name": name, "type": t, "link": None} for name, t in inputs],
                "outputs": [{"name": t, "type": t, "links": []} for t in outputs],
                "widgets_values": widgets if widgets is not None else [],
                **extra,
            }
        )
        return node_id

    def link(self, origin: int, origin_slot: int, target: int, target_slot: int, kind: str = "*") -> None:
        link_id = len(self.links) + 1
        self.links.append([link_id, origin, origin_slot, target, target_slot, kind])
        target_node = next(n for n in self.nodes if n["id"] == target)
        target_node["inputs"][target_slot]["link"] = link_id

    def workflow(self, **extra: Any) -> dict[str, Any]:
        return {
            "last_node_id": 99,
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": [],
            "config": {},
            "extra": {},
            "version": 0.4,
            **extra,
        }


def test_widgets_map_positionally_and_links_become_inputs(registry: NodeRegistry) -> None:
    b = Builder()
    b.node(1, "Const", [5], outputs=["INT"])
    b.node(2, "Add", [0, 7], inputs=[("a", "INT")], outputs=["INT"])
    b.node(3, "Echo", inputs=[("value", "*")])
    b.link(1, 0, 2, 0, "INT")
    b.link(2, 0, 3, 0, "INT")
    prompt = workflow_to_prompt(b.workflow(), registry)
    assert prompt["1"] == {"inputs": {"value": 5}, "class_type": "Const", "_meta": {"title": "Const"}}
    assert prompt["2"]["inputs"] == {"a": ["1", 0], "b": 7}
    assert prompt["3"]["inputs"] == {"value": ["2", 0]}


def test_control_after_generate_values_are_skipped(registry: NodeRegistry) -> None:
    b = Builder()
    b.node(1, "PrimitiveInt", [42, "randomize"])
    b.node(2, "Typed", [3, "fixed", 0.25, "label", True, "slow"])  # an older save: control after an INT
    prompt = workflow_to_prompt(b.workflow(), registry)
    assert prompt["1"]["inputs"] == {"value": 42}
    assert prompt["2"]["inputs"] == {
        "count": 3,
        "strength": 0.25,
        "label": "label",
        "enabled": True,
        "mode": "slow",
    }


def test_notes_are_dropped_and_primitive_nodes_feed_their_value(registry: NodeRegistry) -> None:
    b = Builder()
    b.node(1, "Note", ["just a note"])
    b.node(2, "MarkdownNote", ["# note"])
    b.node(3, "PrimitiveNode", [11, "fixed"], outputs=["INT"])
    b.node(4, "Add", [0, 1], inputs=[("a", "INT")], outputs=["INT"])
    b.node(5, "Echo", inputs=[("value", "*")])
    b.link(3, 0, 4, 0, "INT")
    b.link(4, 0, 5, 0)
    prompt = workflow_to_prompt(b.workflow(), registry)
    assert set(prompt) == {"4", "5"}
    assert prompt["4"]["inputs"] == {"a": 11, "b": 1}


def test_reroutes_are_followed(registry: NodeRegistry) -> None:
    b = Builder()
    b.node(1, "Const", [3], outputs=["INT"])
    b.node(2, "Reroute", inputs=[("", "*")], outputs=["*"])
    b.node(3, "Reroute", inputs=[("", "*")], outputs=["*"])
    b.node(4, "Echo", inputs=[("value", "*")])
    b.link(1, 0, 2, 0)
    b.link(2, 0, 3, 0)
    b.link(3, 0, 4, 0)
    assert workflow_to_prompt(b.workflow(), registry)["4"]["inputs"] == {"value": ["1", 0]}


def test_muted_nodes_are_dropped_with_the_links_into_them(registry: NodeRegistry) -> None:
    b = Builder()
    b.node(1, "Const", [3], outputs=["INT"], mode=2)
    b.node(2, "Echo", inputs=[("value", "*")])
    b.link(1, 0, 2, 0)
    prompt = workflow_to_prompt(b.workflow(), registry)
    assert prompt == {"2": {"inputs": {}, "class_type": "Echo", "_meta": {"title": "Echo"}}}


def test_bypassed_nodes_pass_a_matching_input_through(registry: NodeRegistry) -> None:
    b = Builder()
    b.node(1, "Const", [3], outputs=["INT"])
    b.node(2, "Add", [0, 100], inputs=[("a", "INT")], outputs=["INT"], mode=4)
    b.node(3, "Add", [0, 1], inputs=[("a", "INT")], outputs=["INT"])
    b.link(1, 0, 2, 0, "INT")
    b.link(2, 0, 3, 0, "INT")
    prompt = workflow_to_prompt(b.workflow(), registry)
    assert "2" not in prompt
    assert prompt["3"]["inputs"] == {"a": ["1", 0], "b": 1}


def test_list_widget_values_are_wrapped(registry: NodeRegistry) -> None:
    b = Builder()
    b.node(1, "Echo", [[1, 2]], inputs=[("value", "*")])
    b.nodes[0]["inputs"] = []  # the value is a widget here (a converted input)

    class ListWidget:
        CATEGORY = "test"
        FUNCTION = "run"
        RETURN_TYPES = ()
        OUTPUT_NODE = True

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"values": ("STRING", {})}}

        def run(self, values):
            return ()

    registry.register({"ListWidget": ListWidget})
    b.nodes[0]["type"] = "ListWidget"
    assert workflow_to_prompt(b.workflow(), registry)["1"]["inputs"] == {"values": {"__value__": [1, 2]}}


def test_unknown_node_types_are_listed(registry: NodeRegistry) -> None:
    b = Builder()
    b.node(1, "FancyCustomNode", [1])
    b.node(2, "OtherMissing", [])
    with pytest.raises(WorkflowError) as caught:
        workflow_to_prompt(b.workflow(), registry)
    assert caught.value.missing_node_types == ["FancyCustomNode", "OtherMissing"]
    assert "FancyCustomNode (node 1)" in str(caught.value)


def subgraph_workflow(instance_widgets: list[Any], outer_link: bool = False, mode: int = 0) -> dict[str, Any]:
    """An outer Const/Echo around a subgraph `Add(x, y)`; x and y feed widget inputs, so both are promoted
    (x keeps a stored value even though it is linked from outside, as the editor saves it)."""
    sub_id = "0b0c0d0e-0000-4000-8000-000000000001"
    subgraph = {
        "id": sub_id,
        "name": "adder",
        "inputs": [
            {"name": "x", "type": "INT", "linkIds": [1]},
            {"name": "y", "type": "INT", "linkIds": [2]},
        ],
        "outputs": [{"name": "sum", "type": "INT", "linkIds": [3]}],
        "nodes": [
            {
                "id": 1,
                "type": "Add",
                "mode": 0,
                "widgets_values": [0, 9],
                "inputs": [
                    {"name": "a", "type": "INT", "link": 1},
                    {"name": "b", "type": "INT", "widget": {"name": "b"}, "link": 2},
                ],
                "outputs": [{"name": "INT", "type": "INT", "links": [3]}],
            },
        ],
        "links": [
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0, "type": "INT"},
            {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1, "type": "INT"},
            {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0, "type": "INT"},
        ],
    }
    b = Builder()
    b.node(5, "Const", [4], outputs=["INT"])
    b.node(6, sub_id, instance_widgets, inputs=[("x", "INT"), ("y", "INT")], outputs=["INT"], mode=mode)
    b.node(7, "Echo", inputs=[("value", "*")])
    b.link(5, 0, 6, 0, "INT")
    if outer_link:
        b.link(5, 0, 6, 1, "INT")
    b.link(6, 0, 7, 0, "INT")
    return b.workflow(definitions={"subgraphs": [subgraph]})


def test_subgraphs_expand_with_outer_and_inner_ids(registry: NodeRegistry) -> None:
    prompt = workflow_to_prompt(subgraph_workflow([0, 30]), registry)
    assert set(prompt) == {"5", "6:1", "7"}
    assert prompt["6:1"]["inputs"] == {"a": ["5", 0], "b": 30}  # the promoted widget's value wins
    assert prompt["7"]["inputs"] == {"value": ["6:1", 0]}


def test_subgraph_input_linked_from_outside(registry: NodeRegistry) -> None:
    prompt = workflow_to_prompt(subgraph_workflow([0, 30], outer_link=True), registry)
    assert prompt["6:1"]["inputs"] == {"a": ["5", 0], "b": ["5", 0]}


def test_subgraph_without_promoted_values_keeps_the_inner_widget(registry: NodeRegistry) -> None:
    assert workflow_to_prompt(subgraph_workflow([]), registry)["6:1"]["inputs"]["b"] == 9


def test_bypassed_subgraph_passes_through(registry: NodeRegistry) -> None:
    prompt = workflow_to_prompt(subgraph_workflow([0, 30], mode=4), registry)
    assert set(prompt) == {"5", "7"}
    assert prompt["7"]["inputs"] == {"value": ["5", 0]}
