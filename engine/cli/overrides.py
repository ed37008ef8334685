"""`--set NODE_ID.INPUT=VALUE` checked against the node's declared inputs.

The graph executor passes a node every input its prompt holds, so a misspelt `--set 3.sed=1` would add an
input nobody reads and run with the old seed, the typo unnoticed. A name the node does not declare is
refused with the names it does declare.
"""

from __future__ import annotations

import difflib
import inspect

from engine.graph.prompt import GraphFileError
from engine.graph.registry import NodeRegistry
from engine.graph.types import Prompt


def _takes_any_input(registry: NodeRegistry, class_type: str) -> bool:
    """Whether the node's function has **kwargs, so that any input name reaches it (dynamic inputs)."""
    definition = registry.definition(class_type)
    function = getattr(definition.cls, definition.function, None)
    if function is None:
        return False
    parameters = inspect.signature(function).parameters.values()
    return any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters)


def check_overrides(before: Prompt, after: Prompt, registry: NodeRegistry) -> None:
    """Raises GraphFileError for an input `--set` added (in `after`, not in `before`) that the node's
    class does not declare."""
    for node_id, node in after.items():
        added = set(node.get("inputs", {})) - set(before[node_id].get("inputs", {}))
        class_type = node["class_type"]
        if not added or class_type not in registry or _takes_any_input(registry, class_type):
            continue
        definition = registry.definition(class_type)
        declared = list(definition.inputs)
        for name in sorted(added - set(declared)):
            close = difflib.get_close_matches(name, declared, n=1)
            suggestion = f"; did you mean '{close[0]}'?" if close else ""
            raise GraphFileError(
                f"--set {node_id}.{name}: node {node_id} ({class_type}) has no input '{name}'{suggestion} "
                f"(its inputs: {', '.join(declared)})"
            )
