"""`comfy_api.latest.io`: the V3 node schema (ComfyUI's `comfy_api/latest/_io.py` contract).

A V3 node is a `ComfyNode` subclass whose `define_schema()` returns a `Schema` of typed inputs and outputs,
and whose classmethod `execute(**inputs)` returns a `NodeOutput`. The schema renders to the same V1 shapes
ComfyUI serves for such nodes: `(io_type, options)` input tuples whose options are the non-None settings
(so `"multiline": False` and `"multiselect": False` stay, as ComfyUI shows them), output lists, and the
V3-only `/object_info` keys (output_tooltips, output_matchtypes, deprecated, experimental, api_node).
Only pure-Python types are here: tensors and models are passed through as opaque values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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


class Input:
    """One declared input; `Parent` is the type it belongs to (bound by `comfytype`)."""

    Parent: ClassVar[type[_ComfyType]] = _ComfyType

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
        self.extra_dict = dict(extra_dict or {})
        self.raw_link = raw_link

    @property
    def io_type(self) -> str:
        return self.Parent.io_type

    def get_io_type(self) -> str:
        return self.io_type

    def as_dict(self) -> dict[str, Any]:
        return prune_dict(
            {
                "display_name": self.display_name,
                "optional": self.optional,
                "tooltip": self.tooltip,
                "lazy": self.lazy,
                "rawLink": self.raw_link,
            }
        ) | prune_dict(self.extra_dict)


class WidgetInput(Input):
    """An input the editor can show as a widget (it has a default and may be forced to a socket)."""

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

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | prune_dict(
            {
                "default": self.default,
                "socketless": self.socketless,
                "widgetType": self.widget_type,
                "forceInput": self.force_input,
            }
        )


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


def Custom(io_type: str) -> type[ComfyTypeIO]:
    """A socket type by name, for types this module does not list (what custom packages pass around)."""
    return comfytype(io_type)(type(f"Custom_{io_type}", (ComfyTypeIO,), {}))


class _BooleanInput(WidgetInput):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: bool | None = None,
        label_on: str | None = None,
        label_off: str | None = None,
        socketless: bool | None = None,
        force_input: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
    ) -> None:
        super().__init__(
            id,
            display_name,
            optional,
            tooltip,
            lazy,
            default,
            socketless,
            None,
            force_input,
            extra_dict,
            raw_link,
        )
        self.label_on = label_on
        self.label_off = label_off

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | prune_dict({"label_on": self.label_on, "label_off": self.label_off})


class _IntInput(WidgetInput):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: int | None = None,
        min: int | None = None,
        max: int | None = None,
        step: int | None = None,
        control_after_generate: bool | None = None,
        display_mode: NumberDisplay | None = None,
        socketless: bool | None = None,
        force_input: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
    ) -> None:
        super().__init__(
            id,
            display_name,
            optional,
            tooltip,
            lazy,
            default,
            socketless,
            None,
            force_input,
            extra_dict,
            raw_link,
        )
        self.min, self.max, self.step = min, max, step
        self.control_after_generate = control_after_generate
        self.display_mode = display_mode

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | prune_dict(
            {
                "min": self.min,
                "max": self.max,
                "step": self.step,
                "control_after_generate": self.control_after_generate,
                "display": self.display_mode.value if self.display_mode else None,
            }
        )


class _FloatInput(WidgetInput):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: float | None = None,
        min: float | None = None,
        max: float | None = None,
        step: float | None = None,
        round: float | None = None,
        display_mode: NumberDisplay | None = None,
        socketless: bool | None = None,
        force_input: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
    ) -> None:
        super().__init__(
            id,
            display_name,
            optional,
            tooltip,
            lazy,
            default,
            socketless,
            None,
            force_input,
            extra_dict,
            raw_link,
        )
        self.min, self.max, self.step, self.round = min, max, step, round
        self.display_mode = display_mode

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | prune_dict(
            {
                "min": self.min,
                "max": self.max,
                "step": self.step,
                "round": self.round,
                "display": self.display_mode.value if self.display_mode else None,
            }
        )


class _StringInput(WidgetInput):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        multiline: bool = False,
        placeholder: str | None = None,
        default: str | None = None,
        dynamic_prompts: bool | None = None,
        socketless: bool | None = None,
        force_input: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
    ) -> None:
        super().__init__(
            id,
            display_name,
            optional,
            tooltip,
            lazy,
            default,
            socketless,
            None,
            force_input,
            extra_dict,
            raw_link,
        )
        self.multiline = multiline
        self.placeholder = placeholder
        self.dynamic_prompts = dynamic_prompts

    def as_dict(self) -> dict[str, Any]:
        return super().as_dict() | prune_dict(
            {
                "multiline": self.multiline,
                "placeholder": self.placeholder,
                "dynamicPrompts": self.dynamic_prompts,
            }
        )


class _ComboInput(WidgetInput):
    def __init__(
        self,
        id: str,
        options: list[Any] | type[Enum] | None = None,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: Any = None,
        control_after_generate: bool | None = None,
        upload: UploadType | None = None,
        image_folder: FolderType | None = None,
        socketless: bool | None = None,
        extra_dict: Mapping[str, Any] | None = None,
        raw_link: bool | None = None,
    ) -> None:
        if isinstance(options, type) and issubclass(options, Enum):
            options = [member.value for member in options]
        if isinstance(default, Enum):
            default = default.value
        super().__init__(
            id, display_name, optional, tooltip, lazy, default, socketless, None, None, extra_dict, raw_link
        )
        self.multiselect = False
        self.options = options
        self.control_after_generate = control_after_generate
        self.upload = upload
        self.image_folder = image_folder

    def as_dict(self) -> dict[str, Any]:
        return (
            super().as_dict()
            | prune_dict(
                {
                    "multiselect": self.multiselect,
                    "options": self.options,
                    "control_after_generate": self.control_after_generate,
                    "image_folder": self.image_folder.value if self.image_folder else None,
                }
            )
            | ({self.upload.value: True} if self.upload is not None else {})
        )


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


@comfytype("IMAGE")
class Image(ComfyTypeIO):
    """[batch, height, width, channels] floats in 0..1."""


@comfytype("MASK")
class Mask(ComfyTypeIO):
    """[batch, height, width] floats in 0..1."""


@comfytype("LATENT")
class Latent(ComfyTypeIO):
    """{"samples": tensor, ...}."""


@comfytype("CONDITIONING")
class Conditioning(ComfyTypeIO):
    pass


@comfytype("MODEL")
class Model(ComfyTypeIO):
    pass


@comfytype("CLIP")
class Clip(ComfyTypeIO):
    pass


@comfytype("VAE")
class Vae(ComfyTypeIO):
    pass


@comfytype("SIGMAS")
class Sigmas(ComfyTypeIO):
    pass


@comfytype("NOISE")
class Noise(ComfyTypeIO):
    pass


@comfytype("SAMPLER")
class Sampler(ComfyTypeIO):
    pass


@comfytype("GUIDER")
class Guider(ComfyTypeIO):
    pass


@comfytype("*")
class AnyType(ComfyTypeIO):
    """Connects to any socket."""


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
