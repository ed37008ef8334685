"""Small node classes that exercise each part of the node contract in the graph tests."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from engine.progress import ProgressBar, throw_if_interrupted

calls: Counter[str] = Counter()
"""How many times each test node's function ran (reset for every test)."""

volatile_token = {"value": 0}
slow_started = threading.Event()


class Const:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0, "min": -1000, "max": 1000})}}

    def run(self, value):
        calls["Const"] += 1
        return (value,)


class Add:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 0}), "b": ("INT", {"default": 0})}}

    def run(self, a, b):
        calls["Add"] += 1
        return (a + b,)


class Echo:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("*",)}}

    def run(self, value):
        calls["Echo"] += 1
        return {"ui": {"value": [value]}}


class Switch:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("*",)

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "choose_first": ("BOOLEAN", {"default": True}),
                "first": ("*", {"lazy": True}),
                "second": ("*", {"lazy": True}),
            }
        }

    def check_lazy_status(self, choose_first, first=None, second=None):
        return ["first"] if choose_first else ["second"]

    def run(self, choose_first, first=None, second=None):
        return (first if choose_first else second,)


class Fail:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    def run(self, value):
        raise ValueError(f"boom {value}")


class Range:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)
    OUTPUT_IS_LIST = (True,)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"count": ("INT", {"default": 3, "min": 0})}}

    def run(self, count):
        return (list(range(count)),)


class Sum:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)
    INPUT_IS_LIST = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("INT", {"forceInput": True})}}

    def run(self, values):
        return (sum(values),)


class Volatile:
    """Re-runs whenever `volatile_token` changes, like a loader whose file changed on disk."""

    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    @classmethod
    def IS_CHANGED(cls, value):
        return volatile_token["value"]

    def run(self, value):
        calls["Volatile"] += 1
        return (value + volatile_token["value"],)


class AlwaysChanged(Volatile):
    @classmethod
    def IS_CHANGED(cls, value):
        return float("nan")

    def run(self, value):
        calls["AlwaysChanged"] += 1
        return (value,)


class Counter_:
    """Not idempotent: each node id keeps its own cached output."""

    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)
    NOT_IDEMPOTENT = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    def run(self, value):
        calls["Counter"] += 1
        return (value + calls["Counter"] * 1000,)


class Double:
    """Expands into an Add of its input with itself."""

    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"default": 0})}}

    def run(self, x):
        graph = {
            "add": {"class_type": "Add", "inputs": {"a": x, "b": x}},
            "show": {"class_type": "Echo", "inputs": {"value": ["add", 0]}},
        }
        return {"expand": graph, "result": (["add", 0],)}


class Slow:
    """Works in steps, reporting progress and stopping when interrupted."""

    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)
    release = threading.Event()

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1})}}

    def run(self, steps):
        bar = ProgressBar(steps)
        for step in range(steps):
            slow_started.set()
            if step == 1:
                Slow.release.wait(5)
            throw_if_interrupted()
            bar.update(1)
        return (steps,)


class Even:
    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("INT", {"default": 0})}}

    @classmethod
    def VALIDATE_INPUTS(cls, value):
        return True if value % 2 == 0 else f"value must be even, got {value}"

    def run(self, value):
        return (value,)


class BrokenValidator(Even):
    @classmethod
    def VALIDATE_INPUTS(cls, value):
        raise RuntimeError("validator crashed")


class Typed:
    """A node with one input of each widget type and a link-only IMAGE input."""

    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT", "IMAGE,MASK")
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "count": ("INT", {"default": 1, "min": 1, "max": 10}),
                "strength": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0}),
                "label": ("STRING", {"default": ""}),
                "enabled": ("BOOLEAN", {"default": True}),
                "mode": (["fast", "slow"],),
            },
            "optional": {"image": ("IMAGE",)},
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"},
        }

    def run(self, count, strength, label, enabled, mode, image=None, unique_id=None, prompt=None):
        return {"ui": {"seen": [[count, strength, label, enabled, mode, unique_id]]}, "result": ({}, None)}


NODE_CLASS_MAPPINGS: dict[str, type[Any]] = {
    "Const": Const,
    "Add": Add,
    "Echo": Echo,
    "Switch": Switch,
    "Fail": Fail,
    "Range": Range,
    "Sum": Sum,
    "Volatile": Volatile,
    "AlwaysChanged": AlwaysChanged,
    "Counter": Counter_,
    "Double": Double,
    "Slow": Slow,
    "Even": Even,
    "BrokenValidator": BrokenValidator,
    "Typed": Typed,
}
