"""An example custom node package, in the layout ComfyUI custom nodes use.

Drop a package like this into `custom_nodes/` and its nodes appear in the registry, the editor
and `engine nodes`; its `js/` folder is served to the editor as a front-end extension.
"""

from __future__ import annotations

from typing import Any

CASES = ("upper", "lower", "title", "reverse")


class TextCase:
    """Changes the case of a text (or reverses it)."""

    CATEGORY = "example/text"
    FUNCTION = "apply"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)
    DESCRIPTION = "Upper-cases, lower-cases, title-cases or reverses a text."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "default": ""}),
                "case": (list(CASES), {"default": "upper"}),
            }
        }

    def apply(self, text: str, case: str) -> tuple[str]:
        if case == "reverse":
            return (text[::-1],)
        return (getattr(text, case)(),)


class TextRepeat:
    """Repeats a text a number of times with a separator."""

    CATEGORY = "example/text"
    FUNCTION = "apply"
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("text",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {
                "text": ("STRING", {"default": ""}),
                "times": ("INT", {"default": 2, "min": 1, "max": 100}),
            },
            "optional": {"separator": ("STRING", {"default": " "})},
        }

    def apply(self, text: str, times: int, separator: str = " ") -> tuple[str]:
        return (separator.join([text] * times),)


NODE_CLASS_MAPPINGS = {"ExampleTextCase": TextCase, "ExampleTextRepeat": TextRepeat}
NODE_DISPLAY_NAME_MAPPINGS = {
    "ExampleTextCase": "Text Case (example)",
    "ExampleTextRepeat": "Text Repeat (example)",
}
WEB_DIRECTORY = "./js"
