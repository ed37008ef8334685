"""Logic and helper nodes the templates use, as ComfyUI 0.8 declares them (V3 nodes): ComfySwitchNode
("Switch") and CustomCombo.

The switch's two inputs are lazy: only the one the switch picks is evaluated, so the branch not taken
never runs (its models are not even loaded). Their type is a match type: the editor keeps both inputs
and the output to one type, and the server lets any value through.

CustomCombo's options are widgets the editor adds and keeps to itself (`option1`, `option2`, ...); the
server sees only the chosen one, which it takes as it comes: the node checks it itself (an empty check),
so the combo's own empty option list does not refuse it.
"""

from __future__ import annotations

from typing import Any

from engine.comfy_api.latest import io
from engine.graph.v3 import adapt


class SwitchNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        template = io.MatchType.Template("switch")
        return io.Schema(
            node_id="ComfySwitchNode",
            display_name="Switch",
            category="logic",
            is_experimental=True,
            inputs=[
                io.Boolean.Input("switch"),
                io.MatchType.Input("on_false", template=template, lazy=True),
                io.MatchType.Input("on_true", template=template, lazy=True),
            ],
            outputs=[io.MatchType.Output(template=template, display_name="output")],
        )

    @classmethod
    def check_lazy_status(  # type: ignore[override]  # V3 hooks name the inputs they take
        cls, switch: bool, on_false: Any = None, on_true: Any = None
    ) -> list[str]:
        """Only the input the switch picks, and only until it has been evaluated."""
        wanted = "on_true" if switch else "on_false"
        return [wanted] if {"on_true": on_true, "on_false": on_false}[wanted] is None else []

    @classmethod
    def execute(  # type: ignore[override]  # V3 hooks name the inputs they take
        cls, switch: bool, on_false: Any = None, on_true: Any = None
    ) -> io.NodeOutput:
        return io.NodeOutput(on_true if switch else on_false)


class CustomComboNode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="CustomCombo",
            display_name="Custom Combo",
            category="utils",
            is_experimental=True,
            inputs=[io.Combo.Input("choice", options=[])],
            outputs=[io.String.Output()],
        )

    @classmethod
    def validate_inputs(cls, choice: str) -> bool:
        """The options live in the editor only, so any chosen string is accepted (ComfyUI skips the check
        the same way)."""
        return True

    @classmethod
    def execute(cls, choice: str) -> io.NodeOutput:  # type: ignore[override]  # V3: named inputs
        return io.NodeOutput(choice)


NODE_CLASS_MAPPINGS = adapt({"ComfySwitchNode": SwitchNode, "CustomCombo": CustomComboNode})
NODE_DISPLAY_NAME_MAPPINGS = {"ComfySwitchNode": "Switch", "CustomCombo": "Custom Combo"}
