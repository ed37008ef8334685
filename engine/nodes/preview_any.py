"""PreviewAny: an output node that shows any value as text, so model-free graphs have a result."""

from __future__ import annotations

import json
from typing import Any


def describe(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, int | float | bool):
        return str(value)
    try:
        return json.dumps(value, indent=4)
    except (TypeError, ValueError):
        return str(value)


class PreviewAny:
    CATEGORY = "utils"
    FUNCTION = "main"
    OUTPUT_NODE = True
    RETURN_TYPES = ()
    DESCRIPTION = "Shows the value it receives as text."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"source": ("*", {})}}

    def main(self, source: Any = None) -> dict[str, Any]:
        return {"ui": {"text": [describe(source)]}}


NODE_CLASS_MAPPINGS = {"PreviewAny": PreviewAny}
NODE_DISPLAY_NAME_MAPPINGS = {"PreviewAny": "Preview Any"}
