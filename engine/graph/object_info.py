"""Node definitions in the JSON shape of ComfyUI's `/object_info` (what the web editor builds nodes from)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from engine.graph.node_def import NodeDefinition
from engine.graph.registry import NodeRegistry


def _json_safe(value: Any) -> Any:
    """Declarations may hold tuples, sets or arbitrary objects; the editor needs plain JSON."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def node_info(definition: NodeDefinition) -> dict[str, Any]:
    cls = definition.cls
    v3_info = getattr(cls, "GET_NODE_INFO_V1", None)
    if v3_info is not None:  # a V3 node (engine.graph.v3): ComfyUI renders those from their schema
        return dict(_json_safe(v3_info(definition.python_module)))
    declared_outputs = getattr(cls, "RETURN_TYPES", ())
    info: dict[str, Any] = {
        "input": _json_safe(definition.input_types),
        "input_order": {  # every section declared, an empty one too (as ComfyUI lists it)
            section: list(inputs.keys())
            for section, inputs in definition.input_types.items()
            if isinstance(inputs, Mapping)
        },
        "output": _json_safe(list(declared_outputs)),
        "output_is_list": list(definition.output_is_list),
        "output_name": list(definition.return_names),
        "name": definition.class_type,
        "display_name": definition.display_name,
        "description": definition.description,
        "python_module": definition.python_module,
        "category": definition.category,
        "output_node": definition.output_node,
        "api_node": False,
    }
    for attribute, key in (
        ("OUTPUT_TOOLTIPS", "output_tooltips"),
        ("DEPRECATED", "deprecated"),
        ("EXPERIMENTAL", "experimental"),
    ):
        if hasattr(cls, attribute):
            info[key] = _json_safe(getattr(cls, attribute))
    return info


def object_info(registry: NodeRegistry, class_type: str | None = None) -> dict[str, Any]:
    """All node definitions (or one), keyed by class type; a class whose INPUT_TYPES fails is left out."""
    names = [class_type] if class_type is not None else list(registry)
    result = {}
    for name in names:
        if name not in registry:
            continue
        try:
            result[name] = node_info(registry.definition(name))
        except Exception:  # one broken definition must not hide the others from the editor
            continue
    return result
