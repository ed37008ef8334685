"""An endpoint: a template graph, the request fields that set its inputs, its output and its price.

The HTTP and job layers use an endpoint in four steps: `parse` a request into `Params` (typed values,
defaults applied, the seed drawn when absent), `cost` them, `build` a fresh API prompt whose output node
is a SaveImageAs writing under the prefix the job layer chose, and answer with `output_format` (content
type) and `echoed` (request values the response repeats, such as fal's seed and prompt).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.endpoints.errors import FieldError, RequestError
from engine.endpoints.fields import Field, FieldProblem
from engine.endpoints.pricing import Pricing
from engine.endpoints.schema import request_schema
from engine.folders import relative_name
from engine.graph.types import Prompt
from engine.nodes.save_image_as import CONTENT_TYPES

Api = Literal["segmind", "fal"]
APIS: tuple[Api, ...] = ("segmind", "fal")

SAVE_NODE = "SaveImageAs"
"""The node class an endpoint's output node becomes when a request's prompt is built."""

DEFAULT_QUALITY = 80


@dataclass(frozen=True)
class OutputSpec:
    """Which node makes the endpoint's images, and the format and quality they are written in:
    each either fixed by the template or taken from a field."""

    node: str
    format: str | None = None
    format_field: str | None = None
    quality: int | None = None
    quality_field: str | None = None

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(name for name in (self.format_field, self.quality_field) if name)


@dataclass(frozen=True)
class OutputFormat:
    format: str
    quality: int

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


@dataclass(frozen=True)
class Params:
    """A request's values after parsing: typed, bounded, defaults applied, the seed drawn."""

    values: dict[str, Any]
    seed: int | None = None
    """The seed the images are made with (drawn at random when the request had none); None for
    endpoints without a seed."""
    ignored: tuple[str, ...] = field(default=(), compare=False)
    """Request keys that are not fields of the endpoint; they are ignored, as the APIs imitated ignore
    them, and listed here so the response can warn about a misspelt field."""

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.values


@dataclass(frozen=True)
class Endpoint:
    id: str
    """The URL name: "aura-flow" (Segmind style) or "fal-ai/aura-flow" (fal style, and Segmind style too
    when the template names both)."""
    apis: tuple[Api, ...]
    """The API styles that serve it, the first being the one its documentation leads with."""
    title: str
    description: str
    fields: Mapping[str, Field]
    source: Path
    graph: Prompt
    """The template graph in ComfyUI's API format, as in the file (it runs in ComfyUI unchanged)."""
    output: OutputSpec
    pricing: Pricing
    echo: tuple[str, ...] = ()
    """Fields whose values the response repeats (fal answers with `seed` and `prompt`)."""
    unavailable: str | None = None
    """Why the endpoint cannot run here (a model file it needs is missing); None when it can."""
    published: bool = False
    """Made by publishing (or importing) through the admin routes, so unpublishing may delete its file;
    a template shipped in graphs/ is changed by editing the file instead."""
    template: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """The template's JSON as read: export shares the declaration exactly as it was written, and the
    editor workflow the graph was published from (its `workflow` key), if any."""

    @property
    def seed_field(self) -> Field | None:
        return next((f for f in self.fields.values() if f.random), None)

    def parse(self, values: Mapping[str, Any], *, strings: bool) -> Params:
        """Check a request's values; `strings=True` for forms, where every value arrives as text.

        Raises RequestError listing every field that is missing, mistyped or out of bounds.
        """
        parsed: dict[str, Any] = {}
        errors: list[FieldError] = []
        for name, spec in self.fields.items():
            raw = values.get(name)
            if name not in values or spec.is_absent(raw, text=strings):
                if spec.required:
                    errors.append({"field": name, "code": "required", "message": f"{name} is required"})
                elif spec.random:
                    parsed[name] = spec.random_value()
                elif spec.has_default:
                    parsed[name] = spec.default
                continue
            if spec.required and isinstance(raw, str) and not raw.strip():
                message = f"{name} is required and must not be empty or only whitespace"
                errors.append({"field": name, "code": "required", "message": message})
                continue
            try:
                parsed[name] = spec.parse(raw, text=strings)
            except FieldProblem as problem:
                errors.append(problem.error)
        if errors:
            raise RequestError(errors)
        seed = self.seed_field
        return Params(
            values=parsed,
            seed=parsed.get(seed.name) if seed is not None else None,
            ignored=tuple(name for name in values if name not in self.fields),
        )

    def defaults(self) -> Params:
        """The values a request sending nothing optional gets; random fields take their minimum, so the
        result is the same every time (it is what the template is checked with when it loads)."""
        values = {}
        for name, spec in self.fields.items():
            if spec.random:
                values[name] = int(spec.minimum or 0)
            elif spec.has_default:
                values[name] = spec.default
        return Params(values=values)

    def build(self, params: Params, *, output_prefix: str) -> Prompt:
        """A fresh API prompt for these values, its output node a SaveImageAs saving under `output_prefix`.

        The template is never changed. Raises folders.PathEscapeError for a prefix that would leave the
        output folder.
        """
        relative_name(output_prefix)
        prompt: Prompt = copy.deepcopy(self.graph)
        for name, value in params.values.items():
            spec = self.fields[name]
            for target in spec.sets:
                prompt[target.node]["inputs"][target.input] = value
            if spec.derive is not None:
                row = spec.derive.row(value)
                for component, targets in spec.derive.targets.items():
                    for target in targets:
                        prompt[target.node]["inputs"][target.input] = row[component]
        saved = prompt[self.output.node]
        output = self.output_format(params)
        prompt[self.output.node] = {
            "class_type": SAVE_NODE,
            "inputs": {
                "images": saved["inputs"]["images"],
                "filename_prefix": output_prefix,
                "format": output.format,
                "quality": output.quality,
            },
            "_meta": saved.get("_meta", {"title": "Save Image"}),
        }
        return prompt

    def cost(self, params: Params) -> float:
        """Credits for this request, from the fields marked `affects_price` only."""
        return self.pricing.cost(params.values)

    def output_format(self, params: Params) -> OutputFormat:
        spec = self.output
        image_format = params[spec.format_field] if spec.format_field else spec.format
        quality = params[spec.quality_field] if spec.quality_field else spec.quality
        assert image_format is not None
        return OutputFormat(image_format, DEFAULT_QUALITY if quality is None else quality)

    def echoed(self, params: Params) -> dict[str, Any]:
        return {name: params.values.get(name) for name in self.echo}

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema (2020-12) of the request body."""
        return request_schema(self.id, self.title, self.description, self.fields)
