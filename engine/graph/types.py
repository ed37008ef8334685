"""The shapes graphs are made of: API-format prompts, links, and socket type matching."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, TypeGuard

NodeId = str


class PromptNode(TypedDict):
    """One node of an API-format prompt: `{"class_type": ..., "inputs": {...}, "_meta": {"title": ...}}`."""

    class_type: str
    inputs: dict[str, Any]
    _meta: NotRequired[dict[str, Any]]


Prompt = dict[NodeId, PromptNode]
"""An API-format graph ("prompt"): node id -> node."""

Link = tuple[NodeId, int]
"""(source node id, output slot)."""

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
"""Input types that have a value of their own (a widget in the editor) rather than needing a link."""


def is_link(value: Any) -> TypeGuard[list[Any]]:
    """In API format a list of (node id, slot) is a link; other list values come wrapped in `__value__`."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def as_link(value: list[Any]) -> Link:
    return str(value[0]), value[1]


def socket_types(type_name: str) -> frozenset[str]:
    return frozenset(part.strip() for part in type_name.split(","))


MATCH_TYPE = "COMFY_MATCHTYPE_V3"
"""A V3 match-type socket (a switch's): the editor keeps its group to one type, the server lets any in."""


def types_match(received: str, expected: str) -> bool:
    """ComfyUI's rule: `*` and a match-type socket match anything; comma-separated type sets match when
    they overlap."""
    if received == expected or "*" in (received, expected) or MATCH_TYPE in (received, expected):
        return True
    return not socket_types(received).isdisjoint(socket_types(expected))
