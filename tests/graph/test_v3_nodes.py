"""Custom nodes written against ComfyUI's V3 schema (`comfy_api.latest`) load and run beside V1 ones.

The external check: six ComfyUI core nodes that are V3 in ComfyUI 0.8 are declared here with the engine's
`io` classes, and their object_info must equal the entries ComfyUI recorded (comfy-fixtures/object_info.json)
exactly. The example package's graph results are closed-form (an inverted red image is cyan).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from engine.comfy_api.latest import io
from engine.graph import v3
from engine.graph.execute import Executor, RunResult
from engine.graph.object_info import object_info
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.nodes import create_registry
from tests.comfy_fixtures import index

REPO = Path(__file__).resolve().parents[2]
SPACING_COLORS = ["white", "black", "red", "green", "blue"]


class ImageStitch(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageStitch",
            display_name="Image Stitch",
            category="image/transform",
            description="Stitches image2 to image1 in the specified direction.\n"
            "If image2 is not provided, returns image1 unchanged.\n"
            "Optional spacing can be added between images.",
            inputs=[
                io.Image.Input("image1"),
                io.Combo.Input("direction", options=["right", "down", "left", "up"], default="right"),
                io.Boolean.Input("match_image_size", default=True),
                io.Int.Input("spacing_width", default=0, min=0, max=1024, step=2),
                io.Combo.Input("spacing_color", options=SPACING_COLORS, default="white"),
                io.Image.Input("image2", optional=True),
            ],
            outputs=[io.Image.Output()],
        )


class GetImageSize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="GetImageSize",
            display_name="Get Image Size",
            category="image",
            description="Returns width and height of the image, and passes it through unchanged.",
            inputs=[io.Image.Input("image")],
            outputs=[
                io.Int.Output(display_name="width"),
                io.Int.Output(display_name="height"),
                io.Int.Output(display_name="batch_size"),
            ],
            hidden=[io.Hidden.unique_id],
        )


class StringConcatenate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="StringConcatenate",
            display_name="Concatenate",
            category="utils/string",
            inputs=[
                io.String.Input("string_a", multiline=True),
                io.String.Input("string_b", multiline=True),
                io.String.Input("delimiter", multiline=False, default=""),
            ],
            outputs=[io.String.Output()],
        )


class MaskPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="MaskPreview",
            display_name="Preview Mask",
            category="mask",
            description="Saves the input images to your ComfyUI output directory.",
            inputs=[io.Mask.Input("mask")],
            is_output_node=True,
        )


class Canny(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="Canny",
            category="image/preprocessors",
            inputs=[
                io.Image.Input("image"),
                io.Float.Input("low_threshold", default=0.4, min=0.01, max=0.99, step=0.01),
                io.Float.Input("high_threshold", default=0.8, min=0.01, max=0.99, step=0.01),
            ],
            outputs=[io.Image.Output()],
        )


class ImageRotate(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ImageRotate",
            category="image/transform",
            inputs=[
                io.Image.Input("image"),
                io.Combo.Input("rotation", options=["none", "90 degrees", "180 degrees", "270 degrees"]),
            ],
            outputs=[io.Image.Output()],
        )


CORE_V3 = {
    "comfy_extras.nodes_images": (ImageStitch, GetImageSize, ImageRotate),
    "comfy_extras.nodes_string": (StringConcatenate,),
    "comfy_extras.nodes_mask": (MaskPreview,),
    "comfy_extras.nodes_canny": (Canny,),
}


class Probe(io.ComfyNode):
    """An output node that reports what reached it (a tensor as its per-channel mean) and its own id."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="TestV3Probe",
            inputs=[io.AnyType.Input("value")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, value: Any) -> io.NodeOutput:
        shown = (
            [round(x, 4) for x in value.mean(dim=(0, 1, 2)).tolist()] if hasattr(value, "shape") else value
        )
        return io.NodeOutput(ui={"value": [shown], "node": [cls.hidden.unique_id]})


@pytest.fixture
def registry() -> NodeRegistry:
    registry, reports = create_registry([REPO / "custom_nodes"])
    assert all(report.ok for report in reports), [report.error for report in reports]
    registry.register(v3.adapt({"TestV3Probe": Probe}), python_module="tests.graph.test_v3_nodes")
    return registry


def run(registry: NodeRegistry, prompt: dict[str, Any]) -> RunResult:
    result = validate_prompt(registry, prompt)
    assert result.validated is not None, result.node_errors_json()
    return Executor(registry).run(result.validated, prompt_id="p")


@pytest.mark.parametrize("node", [n for nodes in CORE_V3.values() for n in nodes], ids=lambda n: n.__name__)
def test_core_v3_node_declared_with_io_has_comfyuis_recorded_object_info(node: type[io.ComfyNode]) -> None:
    module = next(name for name, nodes in CORE_V3.items() if node in nodes)
    registry = NodeRegistry()
    name = node.GET_SCHEMA().node_id
    registry.register(v3.adapt({name: node}), python_module=module)
    assert object_info(registry, name)[name] == index("object_info")[name]


def test_the_v3_example_package_loads_through_comfy_entrypoint() -> None:
    registry, reports = create_registry([REPO / "custom_nodes"])
    report = next(r for r in reports if r.name == "example_v3")
    assert report.ok and report.nodes == ["ExampleV3ImageAdjust", "ExampleV3TextJoin"]
    info = object_info(registry)
    adjust = info["ExampleV3ImageAdjust"]
    assert adjust["python_module"] == "custom_nodes.example_v3"
    assert adjust["display_name"] == "Image Adjust (example V3)"
    assert adjust["input"]["required"]["mode"] == [
        "COMBO",
        {"default": "invert", "multiselect": False, "options": ["invert", "grayscale", "brightness"]},
    ]
    assert adjust["input"]["optional"] == {"mask": ["MASK", {}]}
    assert adjust["input_order"] == {"required": ["image", "mode", "amount"], "optional": ["mask"]}
    assert (adjust["output"], adjust["output_name"]) == (["IMAGE"], ["image"])
    # the V3 entry carries the keys ComfyUI gives its own V3 nodes; the V1 example's entry does not
    v3_keys = set(index("object_info")["ImageStitch"])
    assert set(adjust) == set(info["ExampleV3TextJoin"]) == v3_keys
    assert "output_matchtypes" not in info["ExampleTextCase"]


def test_a_graph_mixing_v1_and_v3_nodes_runs(registry: NodeRegistry) -> None:
    prompt: dict[str, Any] = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0xFF0000},
        },
        "2": {
            "class_type": "ExampleV3ImageAdjust",
            "inputs": {"image": ["1", 0], "mode": "invert", "amount": 1.0},
        },
        "3": {"class_type": "TestV3Probe", "inputs": {"value": ["2", 0]}},
        "4": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": 4, "height": 4}},
        "5": {
            "class_type": "ExampleV3ImageAdjust",
            "inputs": {"image": ["1", 0], "mode": "invert", "amount": 1.0, "mask": ["4", 0]},
        },
        "6": {"class_type": "TestV3Probe", "inputs": {"value": ["5", 0]}},
        "7": {"class_type": "ExampleTextCase", "inputs": {"text": "hello", "case": "upper"}},
        "8": {"class_type": "ExampleTextRepeat", "inputs": {"text": "x", "times": 3}},
        "9": {
            "class_type": "ExampleV3TextJoin",
            "inputs": {"text_a": ["7", 0], "use_b": False, "text_b": ["8", 0], "separator": "-", "times": 2},
        },
        "10": {"class_type": "TestV3Probe", "inputs": {"value": ["9", 0]}},
    }
    result = run(registry, prompt)
    assert result.status == "success", result.failure
    assert result.outputs["3"] == {"value": [[0.0, 1.0, 1.0]], "node": ["3"]}  # red inverted is cyan
    assert result.outputs["6"] == {"value": [[1.0, 0.0, 0.0]], "node": ["6"]}  # a zero mask changes nothing
    assert result.outputs["10"]["value"] == ["HELLO-HELLO"]
    assert "8" not in result.executed  # the lazy input was not needed, so its branch never ran

    prompt["9"]["inputs"]["use_b"] = True
    result = run(registry, prompt)
    assert result.outputs["10"]["value"] == ["HELLO-x x x-HELLO-x x x"]
    assert "8" in result.executed


class TextJoinV1:
    """TextJoin's declaration written out the V1 way: V3 validation errors must equal this node's."""

    FUNCTION = "run"
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        string: dict[str, Any] = {"default": "", "multiline": False}
        return {
            "required": {
                "text_a": ("STRING", {"default": "", "multiline": True}),
                "use_b": ("BOOLEAN", {"default": True}),
                "text_b": ("STRING", {**string, "lazy": True}),
                "separator": ("STRING", {**string, "default": " "}),
                "times": ("INT", {"default": 1, "min": 1, "max": 10}),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, separator: str) -> bool | str:
        return True if len(separator) <= 8 else "separator must be at most 8 characters"

    def run(self, **_: Any) -> tuple[str]:
        return ("",)


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("times", 11, "value_bigger_than_max"),
        ("times", 0, "value_smaller_than_min"),
        ("times", "many", "invalid_input_type"),
        ("separator", "far too long", "custom_validation_failed"),
    ],
)
def test_v3_validation_errors_are_those_of_the_same_v1_node(
    registry: NodeRegistry, field: str, value: Any, kind: str
) -> None:
    registry.register({"TextJoinV1": TextJoinV1})
    inputs = {"text_a": "a", "use_b": True, "text_b": "b", "separator": " ", "times": 1, field: value}
    errors = {}
    for class_type in ("ExampleV3TextJoin", "TextJoinV1"):
        prompt = {
            "1": {"class_type": class_type, "inputs": inputs},
            "2": {"class_type": "TestV3Probe", "inputs": {"value": ["1", 0]}},
        }
        result = validate_prompt(registry, prompt)
        assert result.validated is None
        errors[class_type] = result.node_errors["1"].to_json()
    assert errors["ExampleV3TextJoin"]["errors"][0]["type"] == kind
    assert errors["ExampleV3TextJoin"] == {**errors["TextJoinV1"], "class_type": "ExampleV3TextJoin"}


class ColorInput(io.WidgetInput):
    """A custom widget type declared as ComfyUI's own `_io.py` declares its widget inputs: by calling
    `WidgetInput.__init__` positionally (id, display_name, optional, tooltip, lazy, default, socketless,
    widget_type, force_input, extra_dict, raw_link)."""

    def __init__(self, id: str, default: str, optional: bool = False) -> None:
        super().__init__(id, "Colour", optional, None, None, default, None, "COLOR", None, {"alpha": False})


def test_custom_widget_inputs_and_positional_combo_options_keep_comfyuis_constructors() -> None:
    schema = io.Schema(
        node_id="Paint",
        inputs=[
            ColorInput("fill", "#ff0000"),
            ColorInput("edge", "#000000", optional=True),
            io.Combo.Input("mode", ["add", "multiply"], default="add"),
        ],
    )
    assert schema.input_types() == {
        "required": {
            "fill": (
                "COLOR",
                {"display_name": "Colour", "alpha": False, "default": "#ff0000", "widgetType": "COLOR"},
            ),
            "mode": ("COMBO", {"default": "add", "multiselect": False, "options": ["add", "multiply"]}),
        },
        "optional": {
            "edge": (
                "COLOR",
                {"display_name": "Colour", "alpha": False, "default": "#000000", "widgetType": "COLOR"},
            )
        },
    }


def test_a_combo_value_outside_the_v3_options_is_refused(registry: NodeRegistry) -> None:
    """ComfyUI's recorded value_not_in_list shape (validation.json); the V3 declaration is the config."""
    prompt = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 4, "height": 4, "batch_size": 1, "color": 0}},
        "2": {
            "class_type": "ExampleV3ImageAdjust",
            "inputs": {"image": ["1", 0], "mode": "sepia", "amount": 1.0},
        },
        "3": {"class_type": "TestV3Probe", "inputs": {"value": ["2", 0]}},
    }
    result = validate_prompt(registry, prompt)
    options = ["invert", "grayscale", "brightness"]
    assert result.node_errors["2"].to_json() == {
        "errors": [
            {
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": f"mode: 'sepia' not in {options}",
                "extra_info": {
                    "input_name": "mode",
                    "input_config": [
                        "COMBO",
                        {"default": "invert", "multiselect": False, "options": options},
                    ],
                    "received_value": "sepia",
                },
            }
        ],
        "dependent_outputs": ["3"],
        "class_type": "ExampleV3ImageAdjust",
    }


MIXED_PACKAGE = """
from comfy_api.latest import ComfyExtension, io
from comfy_api.latest._io import ComfyNode


class Shout:
    FUNCTION = "run"
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {})}}

    def run(self, text):
        return (text.upper(),)


class Whisper(ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="Whisper", inputs=[io.String.Input("text")], outputs=[io.String.Output()])

    @classmethod
    def execute(cls, text):
        return io.NodeOutput(text.lower())


class Clash(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="EmptyImage", outputs=[io.Image.Output()])


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [Whisper, Clash]


NODE_CLASS_MAPPINGS = {"Shout": Shout}


async def comfy_entrypoint():
    return Extension()
"""

BAD_LIST = """
from comfy_api.latest import ComfyExtension


class Extension(ComfyExtension):
    async def get_node_list(self):
        return [dict]


async def comfy_entrypoint():
    return Extension()
"""


def test_a_package_may_bring_v1_mappings_and_a_v3_entrypoint_and_bad_ones_are_skipped(tmp_path: Path) -> None:
    for name, source in (("a_mixed", MIXED_PACKAGE), ("b_bad_list", BAD_LIST)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(source)
    registry, reports = create_registry([tmp_path])
    mixed, bad = reports
    assert mixed.ok and mixed.nodes == ["Shout", "Whisper"] and mixed.skipped == ["EmptyImage"]
    assert registry.definition("EmptyImage").python_module == "nodes"  # a built-in is never replaced
    assert not bad.ok and "not an io.ComfyNode class" in (bad.error or "")
    prompt = {
        "1": {"class_type": "Shout", "inputs": {"text": "MiXeD"}},
        "2": {"class_type": "Whisper", "inputs": {"text": ["1", 0]}},
        "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
    }
    assert run(registry, prompt).outputs["3"] == {"text": ["mixed"]}


class Counted(io.ComfyNode):
    """A V3 node whose fingerprint_inputs (ComfyUI's IS_CHANGED) decides whether a cached result is reused."""

    runs: ClassVar[list[int]] = []
    token: ClassVar[dict[str, int]] = {"value": 0}

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(node_id="TestV3Counted", inputs=[io.Int.Input("value")], outputs=[io.Int.Output()])

    @classmethod
    def fingerprint_inputs(cls, value: int) -> int:
        return cls.token["value"]

    @classmethod
    def execute(cls, value: int) -> io.NodeOutput:
        cls.runs.append(value)
        return io.NodeOutput(value)


def test_fingerprint_inputs_decides_cache_reuse_as_is_changed_does(registry: NodeRegistry) -> None:
    registry.register(v3.adapt({"TestV3Counted": Counted}))
    executor = Executor(registry)
    prompt = {
        "1": {"class_type": "TestV3Counted", "inputs": {"value": 7}},
        "2": {"class_type": "TestV3Probe", "inputs": {"value": ["1", 0]}},
    }
    for _ in range(2):
        validated = validate_prompt(registry, prompt).validated
        assert validated is not None
        executor.run(validated, prompt_id="p")
    assert Counted.runs == [7]  # same fingerprint: the second run reused the cached result
    Counted.token["value"] = 1
    validated = validate_prompt(registry, prompt).validated
    assert validated is not None
    assert executor.run(validated, prompt_id="p").outputs["2"]["value"] == [7]
    assert Counted.runs == [7, 7]
