"""Custom node packages load from custom_nodes/; a broken one is reported and skipped; object_info shape."""

from __future__ import annotations

import textwrap
from pathlib import Path

from engine.graph.object_info import object_info
from engine.nodes import create_registry

REPO = Path(__file__).resolve().parents[2]

GOOD = """
class Shout:
    CATEGORY = "custom"
    FUNCTION = "run"
    RETURN_TYPES = ("STRING",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": "hi"})}}

    def run(self, text):
        return (text.upper(),)

NODE_CLASS_MAPPINGS = {"Shout": Shout}
NODE_DISPLAY_NAME_MAPPINGS = {"Shout": "Shout!"}
"""


def write_package(root: Path, name: str, source: str, as_folder: bool = True) -> None:
    if as_folder:
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text(textwrap.dedent(source))
    else:
        root.mkdir(parents=True, exist_ok=True)
        (root / f"{name}.py").write_text(textwrap.dedent(source))


def test_the_example_package_loads_with_its_web_directory() -> None:
    registry, reports = create_registry([REPO / "custom_nodes"])
    report = next(r for r in reports if r.name == "example_text")
    assert report.ok and set(report.nodes) == {"ExampleTextCase", "ExampleTextRepeat"}
    assert registry.web_directories["example_text"] == (REPO / "custom_nodes/example_text/js").resolve()
    info = object_info(registry, "ExampleTextCase")["ExampleTextCase"]
    assert info["python_module"] == "custom_nodes.example_text"
    assert info["display_name"] == "Text Case (example)"


def test_broken_package_is_reported_and_the_rest_still_load(tmp_path: Path) -> None:
    write_package(tmp_path, "a_broken", "raise ImportError('needs a library that is not installed')")
    write_package(tmp_path, "b_good", GOOD, as_folder=False)
    write_package(tmp_path, "c_no_mappings", "VALUE = 1")
    write_package(tmp_path, "d_disabled.disabled", GOOD)
    registry, reports = create_registry([tmp_path])
    by_name = {r.name: r for r in reports}
    assert set(by_name) == {"a_broken", "b_good", "c_no_mappings"}
    assert not by_name["a_broken"].ok and "needs a library" in (by_name["a_broken"].error or "")
    assert not by_name["c_no_mappings"].ok and "NODE_CLASS_MAPPINGS" in (by_name["c_no_mappings"].error or "")
    assert by_name["b_good"].ok and by_name["b_good"].nodes == ["Shout"]
    assert "Shout" in registry and "PreviewAny" in registry


def test_malformed_node_class_rejects_the_package(tmp_path: Path) -> None:
    write_package(tmp_path, "bad_class", "class X:\n    pass\nNODE_CLASS_MAPPINGS = {'X': X}\n")
    registry, reports = create_registry([tmp_path])
    assert not reports[0].ok and "X" not in registry


def test_builtin_names_are_not_overridden(tmp_path: Path) -> None:
    source = GOOD.replace('{"Shout": Shout}', '{"PreviewAny": Shout, "Shout": Shout}')
    write_package(tmp_path, "clash", source)
    registry, reports = create_registry([tmp_path])
    assert reports[0].skipped == ["PreviewAny"] and reports[0].nodes == ["Shout"]
    assert registry.node_class("PreviewAny").__module__ == "engine.nodes.preview_any"


def test_object_info_has_comfyui_shape() -> None:
    registry, _ = create_registry()
    info = object_info(registry)
    entry = info["PrimitiveInt"]
    assert set(entry) >= {
        "input",
        "input_order",
        "output",
        "output_is_list",
        "output_name",
        "name",
        "display_name",
        "description",
        "python_module",
        "category",
        "output_node",
    }
    assert entry["input"]["required"]["value"][0] == "INT"
    assert entry["input"]["required"]["value"][1]["control_after_generate"] is True
    assert entry["input_order"] == {"required": ["value"]}
    assert (entry["output"], entry["output_is_list"], entry["output_name"]) == (["INT"], [False], ["INT"])
    assert (entry["display_name"], entry["category"], entry["output_node"]) == (
        "Int",
        "utils/primitive",
        False,
    )
    assert info["PreviewAny"]["output_node"] is True
