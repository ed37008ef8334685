"""Reading a graph from a file or a request body: an API prompt, or a UI workflow converted to one."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.graph.registry import NodeRegistry
from engine.graph.types import Prompt
from engine.graph.workflow import is_workflow, workflow_to_prompt
from engine.json_file import read_json_file


class GraphFileError(ValueError):
    """A file or body that holds no usable graph; the message says what was found instead."""


def read_graph(data: Any, registry: NodeRegistry) -> Prompt:
    """Accepts an API prompt, a `{"prompt": ...}` request body, or a UI workflow."""
    if is_workflow(data):
        return workflow_to_prompt(data, registry)
    if isinstance(data, Mapping) and isinstance(data.get("prompt"), Mapping):
        data = data["prompt"]
    if isinstance(data, Mapping) and data and all(isinstance(node, Mapping) for node in data.values()):
        return {str(node_id): dict(node) for node_id, node in data.items()}  # type: ignore[misc]
    raise GraphFileError("expected an API-format prompt (node id -> {class_type, inputs}) or a UI workflow")


def load_graph(path: Path, registry: NodeRegistry) -> Prompt:
    data = read_json_file(path, GraphFileError)
    try:
        return read_graph(data, registry)
    except GraphFileError as exc:
        raise GraphFileError(f"{path}: {exc}") from exc


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (5, 2.5, true, "x", [..]), otherwise the text itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(prompt: Prompt, assignments: Iterable[str]) -> Prompt:
    """Set inputs from `NODE_ID.INPUT=VALUE` strings, returning a new prompt."""
    updated: Prompt = {
        node_id: {**node, "inputs": dict(node.get("inputs", {}))} for node_id, node in prompt.items()
    }
    for assignment in assignments:
        target, equals, value = assignment.partition("=")
        node_id = next(
            (target[:i] for i, char in enumerate(target) if char == "." and target[:i] in updated),
            None,
        )
        if not equals or node_id is None or len(target) <= len(node_id) + 1:
            raise GraphFileError(
                f"--set {assignment!r}: expected NODE_ID.INPUT=VALUE with an existing node id "
                f"(nodes: {', '.join(sorted(updated))})"
            )
        updated[node_id]["inputs"][target[len(node_id) + 1 :]] = parse_value(value)
    return updated
