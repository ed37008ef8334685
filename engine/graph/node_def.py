"""A node class read once into a typed definition (ComfyUI's V1 node contract, COMFY.md §4).

Node classes declare their inputs in `INPUT_TYPES()`, which may be dynamic (a loader lists the
files in its model folder), so definitions are built on demand and memoised only by callers for
the span of one validation or run.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.graph.types import WIDGET_TYPES

Section = Literal["required", "optional"]


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str
    """Socket type: "INT", "IMAGE", "*", "A,B"; a combo input is "COMBO" with `choices`."""
    options: Mapping[str, Any]
    section: Section
    declared: tuple[Any, ...]
    """The input exactly as INPUT_TYPES declared it (for object_info and error reports)."""
    choices: tuple[Any, ...] | None = None

    @property
    def lazy(self) -> bool:
        return bool(self.options.get("lazy"))

    @property
    def raw_link(self) -> bool:
        return bool(self.options.get("rawLink"))

    @property
    def is_widget(self) -> bool:
        """Whether the editor shows a widget for it (and stores its value in `widgets_values`)."""
        return self.type in WIDGET_TYPES and not self.options.get("forceInput")

    @property
    def control_values(self) -> int:
        """How many editor-only values follow this widget in `widgets_values` (seed "randomize" etc.)."""
        control = self.options.get("control_after_generate")
        if self.type == "INT" and (control if control is not None else self.name in ("seed", "noise_seed")):
            return 1
        if self.type == "COMBO" and control:
            return 2  # the control mode and the combo's filter string
        return 0


@dataclass(frozen=True)
class NodeDefinition:
    class_type: str
    cls: type[Any]
    """The node class as its module defines it; `type[Any]` because ComfyUI node classes (ours and custom
    nodes') declare INPUT_TYPES, FUNCTION, VALIDATE_INPUTS, ... by convention, not by a base class."""
    display_name: str
    python_module: str
    input_types: Mapping[str, Any]
    """INPUT_TYPES() as returned: {"required": {...}, "optional": {...}, "hidden": {...}}."""
    inputs: Mapping[str, InputSpec]
    """Required then optional inputs, in declaration order."""
    hidden: Mapping[str, str]
    """Hidden input name -> what the executor supplies (PROMPT, UNIQUE_ID, EXTRA_PNGINFO, DYNPROMPT...)."""
    return_types: tuple[str, ...]
    return_names: tuple[str, ...]
    output_is_list: tuple[bool, ...]
    output_node: bool
    function: str
    input_is_list: bool
    not_idempotent: bool
    category: str
    description: str
    validate_params: frozenset[str] | None = field(default=None)
    """Parameter names of VALIDATE_INPUTS (None when the class has none); "*" stands for **kwargs."""

    @property
    def widgets(self) -> list[InputSpec]:
        return [spec for spec in self.inputs.values() if spec.is_widget]


class NodeDefinitionError(TypeError):
    """A node class that does not follow the node contract; the message names the class."""


def _input_spec(name: str, declared: Any, section: Section, class_type: str) -> InputSpec:
    if not isinstance(declared, tuple | list) or not declared:
        raise NodeDefinitionError(f"{class_type}: input '{name}' must be declared as (type, options)")
    kind = declared[0]
    options = declared[1] if len(declared) > 1 and isinstance(declared[1], Mapping) else {}
    if isinstance(kind, list | tuple):
        return InputSpec(name, "COMBO", options, section, tuple(declared), tuple(kind))
    if not isinstance(kind, str):
        raise NodeDefinitionError(
            f"{class_type}: input '{name}' has a type that is neither a name nor a list"
        )
    choices = tuple(options["options"]) if kind == "COMBO" and "options" in options else None
    return InputSpec(name, kind, options, section, tuple(declared), choices)


def _validate_params(cls: type[Any]) -> frozenset[str] | None:
    validate = getattr(cls, "VALIDATE_INPUTS", None)
    if validate is None:
        return None
    names = set()
    for parameter in inspect.signature(validate).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            names.add("*")
        elif parameter.name not in ("self", "cls"):
            names.add(parameter.name)
    return frozenset(names)


def _hidden_kind(declared: Any) -> str:
    """V1 nodes declare a hidden input as "PROMPT"; ComfyUI's V3 nodes (and object_info) as ["PROMPT"]."""
    if isinstance(declared, list | tuple) and declared:
        return str(declared[0])
    return str(declared)


def output_type_name(declared: Any) -> str:
    """An output declared as a list of options is a combo."""
    return "COMBO" if isinstance(declared, list | tuple) else str(declared)


def define(
    class_type: str, cls: type[Any], display_name: str | None = None, python_module: str = "nodes"
) -> NodeDefinition:
    try:
        input_types = cls.INPUT_TYPES()
    except Exception as exc:
        raise NodeDefinitionError(f"{class_type}: INPUT_TYPES() failed: {exc}") from exc
    if not isinstance(input_types, Mapping):
        raise NodeDefinitionError(f"{class_type}: INPUT_TYPES() must return a dict")
    inputs: dict[str, InputSpec] = {}
    for section in ("required", "optional"):
        for name, declared in (input_types.get(section) or {}).items():
            inputs[name] = _input_spec(name, declared, section, class_type)
    hidden = {name: _hidden_kind(kind) for name, kind in (input_types.get("hidden") or {}).items()}

    return_types = tuple(output_type_name(t) for t in getattr(cls, "RETURN_TYPES", ()))
    return_names = tuple(getattr(cls, "RETURN_NAMES", None) or return_types)
    output_is_list = tuple(getattr(cls, "OUTPUT_IS_LIST", None) or (False,) * len(return_types))
    function = getattr(cls, "FUNCTION", None)
    if not function or not callable(getattr(cls, function, None)):
        raise NodeDefinitionError(f"{class_type}: FUNCTION must name a method of the class")
    return NodeDefinition(
        class_type=class_type,
        cls=cls,
        display_name=display_name or class_type,
        python_module=python_module,
        input_types=input_types,
        inputs=inputs,
        hidden=hidden,
        return_types=return_types,
        return_names=return_names,
        output_is_list=output_is_list,
        output_node=bool(getattr(cls, "OUTPUT_NODE", False)),
        function=function,
        input_is_list=bool(getattr(cls, "INPUT_IS_LIST", False)),
        not_idempotent=bool(getattr(cls, "NOT_IDEMPOTENT", False)),
        category=str(getattr(cls, "CATEGORY", "")),
        description=str(getattr(cls, "DESCRIPTION", "")),
        validate_params=_validate_params(cls),
    )
