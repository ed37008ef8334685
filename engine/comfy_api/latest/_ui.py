"""`comfy_api.latest.ui`: what a V3 node returns as `NodeOutput(ui=...)` for the editor and the history.

Each object renders to the V1 `ui` dict (`{"text": [...]}`, `{"images": [...]}`) the executor already
reports in `executed` messages and `/history`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class UIOutput:
    def as_dict(self) -> dict[str, list[Any]]:
        raise NotImplementedError


@dataclass(frozen=True)
class SavedResult:
    """A file a node wrote: where /view finds it."""

    filename: str
    subfolder: str
    type: str

    def as_dict(self) -> dict[str, str]:
        return {"filename": self.filename, "subfolder": self.subfolder, "type": self.type}


class SavedImages(UIOutput):
    def __init__(self, results: list[SavedResult]) -> None:
        self.results = results

    def as_dict(self) -> dict[str, list[Any]]:
        return {"images": [result.as_dict() for result in self.results]}


class PreviewText(UIOutput):
    """Text the editor shows on the node (ComfyUI's `{"text": [value]}`)."""

    def __init__(self, value: str) -> None:
        self.value = value

    def as_dict(self) -> dict[str, list[Any]]:
        return {"text": [self.value]}
