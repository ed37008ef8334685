"""`comfy_api.latest.io`: the V3 node schema (ComfyUI's `comfy_api/latest/_io.py` contract).

A V3 node is a `ComfyNode` subclass whose `define_schema()` returns a `Schema` of typed inputs and outputs,
and whose classmethod `execute(**inputs)` returns a `NodeOutput`. The schema renders to the same V1 shapes
ComfyUI serves for such nodes: `(io_type, options)` input tuples whose options are the non-None settings
(so `"multiline": False` and `"multiselect": False` stay, as ComfyUI shows them), output lists, and the
V3-only `/object_info` keys (output_tooltips, output_matchtypes, deprecated, experimental, api_node).
Only pure-Python types are here: tensors and models are passed through as opaque values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import Field, dataclass, field, fields
from enum import Enum, StrEnum
from typing import Any, ClassVar, TypeVar

from engine.graph.types import MATCH_TYPE


def prune_dict(values: Mapping[str, Any]) -> dict[str, Any]:
    """Settings left at None are not declared (ComfyUI omits them from object_info)."""
    return {key: value for key, value in values.items() if value is not None}


class NumberDisplay(StrEnum):
    number = "number"
    slider = "slider"


class UploadType(StrEnum):
    image = "image_upload"
    audio = "audio_upload"
    video = "video_upload"
    model = "file_upload"


class FolderType(StrEnum):
    input = "input"
    output = "output"
    temp = "temp"


class Hidden(StrEnum):
    """Values the executor supplies to a node without a socket; the member name is the input's name."""

    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"
    auth_token_comfy_org = "AUTH_TOKEN_COMFY_ORG"
    api_key_comfy_org = "API_KEY_COMFY_ORG"


@dataclass(frozen=True)
class HiddenHolder:
    """What `cls.hidden` holds while a V3 node's `execute` runs."""

    unique_id: str | None = None
    prompt: Any = None
    extra_pnginfo: Any = None
    dynprompt: Any = None
    auth_token_comfy_org: str | None = None
    api_key_comfy_org: str | None = None


class _ComfyType:
    """A socket type: `io_type` is its name in graphs; `Input`/`Output` build its declarations."""

    io_type: ClassVar[str] = ""
    Type: ClassVar[Any] = Any


OPTION = "option"
"""Field metadata naming the `/object_info` key a setting is shown under."""


def _option(key: str, default: Any = None, *, positional: bool = False) -> Any:
    """A setting shown in the input's `/object_info` options under `key` (ComfyUI's spelling) unless None."""
    return field(default=default, kw_only=not positional, metadata={OPTION: key})


@dataclass(eq=False, kw_only=True, init=False)
class Input:
    """One declared input; `Parent` is the type it belongs to (bound by `comfytype`).

    Settings are fields whose metadata names their `/object_info` key, so each type's input declares a
    setting once and `as_dict` shows them all. `Input` and `WidgetInput` keep ComfyUI's positional
    constructors (custom widget types call them so); the types' own inputs take every setting after `id`
    by name, as ComfyUI's nodes pass them (Combo's `options` may also come second).
    """

    Parent: ClassVar[type[_ComfyType]] = _ComfyType

    id: str = field(kw_only=False)
    display_name: str | None = _option("display_name")
    optional: bool = _option("optional", False)
    tooltip: str | None = _option("tooltip")
    lazy: bool | None = _option("lazy")
    extra_dict: Mapping[str, Any] | None = None
    raw_link: bool | None = _option("rawLink")

    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
    ) -> None:
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict
        self.raw_link = raw_link
        self.__post_init__()

    def __post_init__(self) -> None:
        self.extra_dict = dict(self.extra_dict or {})

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    def get_io_type(self) -> str:
        return self.io_type

    def as_dict(self) -> dict[str, Any]:
        """The options ComfyUI shows: `extra_dict` overrides the base settings, and the settings a widget
        type adds override `extra_dict` (ComfyUI merges them in that order)."""
        base = {declared.name for declared in fields(Input)}
        settings = [declared for declared in fields(self) if OPTION in declared.metadata]
        return (
            self._shown(declared for declared in settings if declared.name in base)
            | prune_dict(self.extra_dict or {})
            | self._shown(declared for declared in settings if declared.name not in base)
        )

    def _shown(self, settings: Iterable[Field[Any]]) -> dict[str, Any]:
        """Enum settings (display mode, image folder) are shown by their value."""
        shown = {}
        for declared in settings:
            value = getattr(self, declared.name)
            shown[declared.metadata[OPTION]] = value.value if isinstance(value, Enum) else value
        return prune_dict(shown)


@dataclass(eq=False, kw_only=True, init=False)
class WidgetInput(Input):
    """An input the editor can show as a widget (it has a default and may be forced to a socket)."""

    default: Any = _option("default")
    socketless: bool | None = _option("socketless")
    widget_type: str | None = _option("widgetType")
    force_input: bool | None = _option("forceInput")

    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: Any = None,
        socketless: bool | None = None,
        widget_type: str | None = None,
        force_input: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
    ) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def get_io_type(self) -> str:
        return self.widget_type if self.widget_type is not None else self.io_type


class Output:
    """One declared output; outputs without an id get `_<index>_<type>_`, as in ComfyUI."""

    Parent: ClassVar[type[_ComfyType]] = _ComfyType

    def __init__(
        self,
        id: str | None = None,
        display_name: str | None = None,
        tooltip: str | None = None,
        is_output_list: bool = False,
    ) -> None:
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


class ComfyTypeIO(_ComfyType):
    Input: ClassVar[type[Input]] = Input
    Output: ClassVar[type[Output]] = Output


T = TypeVar("T", bound=type[ComfyTypeIO])


def comfytype(io_type: str) -> Callable[[T], T]:
    """Bind a type's name, and give it its own Input/Output subclasses that know their parent type."""

    def bind(cls: T) -> T:
        cls.io_type = io_type
        cls.Input = type(
            cls.Input.__name__, (cls.Input,), {"Parent": cls, "__qualname__": f"{cls.__name__}.Input"}
        )
        cls.Output = type(
            cls.Output.__name__, (cls.Output,), {"Parent": cls, "__qualname__": f"{cls.__name__}.Output"}
        )
        return cls

    return bind


@dataclass(eq=False, kw_only=True)
class _BooleanInput(WidgetInput):
    default: bool | None = _option("default")
    label_on: str | None = _option("label_on")
    label_off: str | None = _option("label_off")


@dataclass(eq=False, kw_only=True)
class _IntInput(WidgetInput):
    default: int | None = _option("default")
    min: int | None = _option("min")
    max: int | None = _option("max")
    step: int | None = _option("step")
    control_after_generate: bool | None = _option("control_after_generate")
    display_mode: NumberDisplay | None = _option("display")


@dataclass(eq=False, kw_only=True)
class _FloatInput(WidgetInput):
    default: float | None = _option("default")
    min: float | None = _option("min")
    max: float | None = _option("max")
    step: float | None = _option("step")
    round: float | None = _option("round")
    display_mode: NumberDisplay | None = _option("display")


@dataclass(eq=False, kw_only=True)
class _StringInput(WidgetInput):
    default: str | None = _option("default")
    multiline: bool = _option("multiline", False)
    placeholder: str | None = _option("placeholder")
    dynamic_prompts: bool | None = _option("dynamicPrompts")


@dataclass(eq=False, kw_only=True)
class _ComboInput(WidgetInput):
    """A choice among `options` (a list, or an Enum whose values are the choices)."""

    multiselect: bool = field(default=False, init=False, metadata={OPTION: "multiselect"})
    options: list[Any] | type[Enum] | None = _option("options", positional=True)
    control_after_generate: bool | None = _option("control_after_generate")
    upload: UploadType | None = None
    image_folder: FolderType | None = _option("image_folder")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.options, type) and issubclass(self.options, Enum):
            self.options = [member.value for member in self.options]
        if isinstance(self.default, Enum):
            self.default = self.default.value

    def as_dict(self) -> dict[str, Any]:
        """An upload widget is shown as its kind's key set to true (`"image_upload": true`)."""
        return super().as_dict() | ({self.upload.value: True} if self.upload is not None else {})


@comfytype("BOOLEAN")
class Boolean(ComfyTypeIO):
    Type = bool
    Input = _BooleanInput


@comfytype("INT")
class Int(ComfyTypeIO):
    Type = int
    Input = _IntInput


@comfytype("FLOAT")
class Float(ComfyTypeIO):
    Type = float
    Input = _FloatInput


@comfytype("STRING")
class String(ComfyTypeIO):
    Type = str
    Input = _StringInput


@comfytype("COMBO")
class Combo(ComfyTypeIO):
    Type = str
    Input = _ComboInput


def _socket_type(name: str, io_type: str, doc: str | None = None) -> type[ComfyTypeIO]:
    """A type whose values the engine passes between nodes without looking inside (tensors, models)."""
    return comfytype(io_type)(type(name, (ComfyTypeIO,), {"__doc__": doc, "__module__": __name__}))


def Custom(io_type: str) -> type[ComfyTypeIO]:
    """A socket type by name, for types this module does not list (what custom packages pass around)."""
    return _socket_type(f"Custom_{io_type}", io_type)


Image = _socket_type("Image", "IMAGE", "[batch, height, width, channels] floats in 0..1.")
Mask = _socket_type("Mask", "MASK", "[batch, height, width] floats in 0..1.")
Latent = _socket_type("Latent", "LATENT", '{"samples": tensor, ...}.')
Conditioning = _socket_type("Conditioning", "CONDITIONING")
Model = _socket_type("Model", "MODEL")
Clip = _socket_type("Clip", "CLIP")
Vae = _socket_type("Vae", "VAE")
Sigmas = _socket_type("Sigmas", "SIGMAS")
Noise = _socket_type("Noise", "NOISE")
Sampler = _socket_type("Sampler", "SAMPLER")
Guider = _socket_type("Guider", "GUIDER")
AnyType = _socket_type("AnyType", "*", "Connects to any socket.")


class _MatchTemplate:
    """Sockets sharing a template id take one type, the first connected one's (the editor enforces it;
    the server lets any type through such a socket, as ComfyUI's validation does)."""

    def __init__(
        self, template_id: str, allowed_types: type[ComfyTypeIO] | list[type[ComfyTypeIO]] = AnyType
    ) -> None:
        self.template_id = template_id
        self.allowed_types = allowed_types if isinstance(allowed_types, list) else [allowed_types]

    def as_dict(self) -> dict[str, Any]:
        return {
            "template_id": self.template_id,
            "allowed_types": ",".join(kind.io_type for kind in self.allowed_types),
        }


class _MatchTypeInput(Input):
    def __init__(
        self,
        id: str,
        template: _MatchTemplate,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
    ) -> None:
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict, raw_link)
        self.template = template

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | {"template": self.template.as_dict()}


class _MatchTypeOutput(Output):
    def __init__(
        self,
        template: _MatchTemplate,
        id: str | None = None,
        display_name: str | None = None,
        tooltip: str | None = None,
        is_output_list: bool = False,
    ) -> None:
        super().__init__(id, display_name, tooltip, is_output_list)
        self.template = template


@comfytype(MATCH_TYPE)
class MatchType(ComfyTypeIO):
    """A socket whose type is the one its template's sockets are connected with (a switch's inputs and
    output); `MatchType.Template(id)` names the group."""

    Template = _MatchTemplate
    Input = _MatchTypeInput
    Output = _MatchTypeOutput


@dataclass
class Schema:
    """A V3 node's declaration: what `define_schema()` returns."""

    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False

    def finalize(self) -> None:
        """Output nodes are given the prompt and its PNG info (they may embed them), as ComfyUI does."""
        if self.is_output_node:
            for hidden in (Hidden.prompt, Hidden.extra_pnginfo):
                if hidden not in self.hidden:
                    self.hidden.append(hidden)
        for index, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{index}_{output.io_type}_"

    def input_types(self) -> dict[str, dict[str, Any]]:
        """The V1 `INPUT_TYPES()` dict: optional inputs in their own section, `optional` not repeated."""
        sections: dict[str, dict[str, Any]] = {"required": {}}
        for declared in self.inputs:
            options = declared.as_dict()
            options.pop("optional", None)
            section = "optional" if declared.optional else "required"
            sections.setdefault(section, {})[declared.id] = (declared.get_io_type(), options)
        for hidden in self.hidden:
            sections.setdefault("hidden", {})[hidden.name] = (hidden.value,)
        return sections

    def output_matchtypes(self) -> list[str | None] | None:
        """Each output's match-type template id, when any output has one (as ComfyUI lists them)."""
        ids = [
            output.template.template_id if isinstance(output, _MatchTypeOutput) else None
            for output in self.outputs
        ]
        return ids if any(ids) else None

    def v1_info(self, python_module: str) -> dict[str, Any]:
        """The node's `/object_info` entry, in the key set ComfyUI 0.8 gives V3 nodes."""
        input_types = self.input_types()
        return {
            "input": input_types,
            "input_order": {section: list(inputs) for section, inputs in input_types.items()},
            "output": [output.io_type for output in self.outputs],
            "output_is_list": [output.is_output_list for output in self.outputs],
            "output_name": [output.display_name or output.io_type for output in self.outputs],
            "output_tooltips": [output.tooltip or None for output in self.outputs],
            "output_matchtypes": self.output_matchtypes(),
            "name": self.node_id,
            "display_name": self.display_name,
            "description": self.description,
            "python_module": python_module,
            "category": self.category,
            "output_node": self.is_output_node,
            "deprecated": self.is_deprecated,
            "experimental": self.is_experimental,
            "api_node": self.is_api_node,
        }


class NodeOutput:
    """What `execute` returns: the output values in order, and optionally `ui` for the editor/history."""

    def __init__(
        self,
        *args: Any,
        ui: Any = None,
        expand: Mapping[str, Any] | None = None,
        block_execution: str | None = None,
    ) -> None:
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None


class ComfyNode:
    """Base of a V3 node. Everything is a classmethod: ComfyUI never keeps V3 node state in instances.

    Optional hooks, looked up by name: `validate_inputs(**inputs) -> True | str`,
    `fingerprint_inputs(**inputs)`
    (ComfyUI's V1 IS_CHANGED) and `check_lazy_status(**inputs) -> list[str]`.
    """

    hidden: ClassVar[HiddenHolder] = HiddenHolder()
    """Set on a per-call copy of the class while `execute` runs (unique_id, prompt, ...)."""

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError(f"{cls.__name__} must define define_schema()")

    @classmethod
    def execute(cls, **inputs: Any) -> Any:
        raise NotImplementedError(f"{cls.__name__} must define execute()")

    @classmethod
    def check_lazy_status(cls, **inputs: Any) -> list[str]:
        """By default every lazy input not evaluated yet is needed (as in ComfyUI)."""
        return [name for name, value in inputs.items() if value is None]

    @classmethod
    def GET_SCHEMA(cls) -> Schema:
        schema = cls.define_schema()
        schema.finalize()
        return schema
