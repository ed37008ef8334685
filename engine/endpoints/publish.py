"""Publishing: a workflow and a compact declaration of its request fields become an endpoint template.

The declaration names what the template format spells out, and the node definitions fill in the rest:

    {"name": "my-flux",                                    # or "owner/app": served fal-style too
     "title": "...", "description": "...",
     "workflow": {API prompt} or {editor workflow},
     "fields": {"prompt": {"input": ["6", "text"], "required": true},
                "steps": {"input": ["17", "steps"], "maximum": 8},
                "seed": {"input": ["25", "noise_seed"]}},
     "output": {"node": "9", "format": "png"},            # node: the only image output, if left out
     "pricing": {"base": 0.001, "add": [{"field": "steps", "per_unit": 0.0005}]},
     "replace": false}

A field's type, bounds (min/max, an INT step as multiple_of) and choices come from the input it sets,
narrowed where the declaration says so; its default is the workflow's value there; a seed (an INT with
the editor's "control after generate") is drawn at random when a request leaves it out; the input's
tooltip describes it unless the declaration does. Every key of the template format (`sets`, `derive`,
`enum`, `max_tokens`, ...) is accepted as well, so an exported declaration, written out in full, publishes
the same endpoint again. Nodes that do not feed the output node (previews, notes) are left out.

The compiled template then gets every check start-up gives a file in graphs/ (`check_template`), and
is written there under its name, atomically: `graphs/my-flux.json`, `graphs/owner/app.json`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeGuard, cast

from engine.endpoints.errors import EndpointError
from engine.endpoints.load import check_template
from engine.endpoints.spec import APIS, Endpoint
from engine.graph.node_def import InputSpec, NodeDefinition
from engine.graph.registry import NodeRegistry
from engine.graph.types import Prompt, PromptNode, is_link
from engine.graph.workflow import WorkflowError, is_workflow, workflow_to_prompt

ProblemKind = Literal["invalid", "conflict", "cannot_run", "not_found"]

REQUEST_KEYS = frozenset(
    {"name", "title", "description", "api", "workflow", "fields", "output", "pricing", "response", "replace"}
)
NAME_LIMIT = 100
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
FIELD_LIMIT = 100
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
FIELD_TYPE_OF_INPUT = {
    "INT": "integer",
    "FLOAT": "number",
    "STRING": "string",
    "COMBO": "string",
    "BOOLEAN": "boolean",
}
DEFAULT_FORMAT = "png"


class PublishError(ValueError):
    """A declaration that cannot be published: `kind` says whose the problem is (the HTTP layer maps it
    to a status), the message names the field, node class or model file."""

    def __init__(self, kind: ProblemKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _invalid(message: str) -> NoReturn:
    raise PublishError("invalid", message)


@dataclass(frozen=True)
class Compiled:
    name: str
    template: dict[str, Any]
    replace: bool


def check_name(name: Any) -> str:
    """An endpoint name that is a safe path below graphs/: one or two segments of letters, digits, '.',
    '_' and '-', none starting with a dot (so neither '..' nor a hidden file)."""
    if not isinstance(name, str) or not name:
        _invalid("name: must be a non-empty string (my-endpoint, or owner/app)")
    if len(name) > NAME_LIMIT:
        _invalid(f"name: must be at most {NAME_LIMIT} characters")
    segments = name.split("/")
    if len(segments) > 2 or not all(_SEGMENT.fullmatch(segment) for segment in segments):
        _invalid(
            f"name: {name[:NAME_LIMIT]!r} must be a name or owner/app of letters, digits, '.', '_' and '-', "
            "each part starting with a letter or digit"
        )
    return name


def template_path(directory: Path, name: str) -> Path:
    """Where the template of endpoint `name` lives (the loader serves a file's path as its name)."""
    path = directory / f"{check_name(name)}.json"
    if not path.resolve().is_relative_to(directory.resolve()):  # a linked owner folder leading out
        _invalid(f"name: {name!r} leads outside the graphs folder")
    return path


class _Compiler:
    def __init__(self, registry: NodeRegistry) -> None:
        self.registry = registry
        self.definitions: dict[str, NodeDefinition] = {}

    def definition(self, class_type: str) -> NodeDefinition:
        if class_type not in self.definitions:
            self.definitions[class_type] = self.registry.definition(class_type)
        return self.definitions[class_type]

    # -- the graph ---------------------------------------------------------------------------------------

    def prompt(self, value: Any) -> tuple[Prompt, Mapping[str, Any] | None]:
        """The API prompt, and the editor workflow it came from if it came from one."""
        if is_workflow(value):
            try:
                return workflow_to_prompt(value, self.registry), value
            except WorkflowError as exc:
                raise PublishError(
                    "cannot_run" if exc.missing_node_types else "invalid", f"workflow: {exc}"
                ) from exc
        if not isinstance(value, Mapping) or not value:
            _invalid(
                "workflow: must be an API-format prompt (node id -> {class_type, inputs}) "
                "or an editor workflow"
            )
        prompt: Prompt = {}
        for node_id, node in value.items():
            if (
                not isinstance(node, Mapping)
                or not isinstance(node.get("class_type"), str)
                or not isinstance(node.get("inputs"), Mapping)
            ):
                _invalid(
                    f"workflow: node {node_id} must be an object with a class_type string "
                    "and an inputs object"
                )
            prompt[str(node_id)] = cast(PromptNode, copy.deepcopy(dict(node)))
        missing = sorted({node["class_type"] for node in prompt.values()} - set(self.registry))
        if missing:
            nodes = "; ".join(
                f"{kind} (node {', '.join(i for i, n in prompt.items() if n['class_type'] == kind)})"
                for kind in missing
            )
            raise PublishError("cannot_run", f"workflow: node types this server does not have: {nodes}")
        return prompt, None

    def output(self, value: Any, prompt: Prompt) -> dict[str, Any]:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            _invalid('output: must be an object such as {"node": "9", "format": "png"}')
        output = dict(value)
        if "node" not in output:
            images = [
                node_id
                for node_id, node in prompt.items()
                if self.definition(node["class_type"]).output_node
                and "images" in self.definition(node["class_type"]).inputs
            ]
            if len(images) != 1:
                listed = ", ".join(f"{i} ({prompt[i]['class_type']})" for i in images) or "none"
                _invalid(
                    "output: node: name the node whose images the endpoint answers with "
                    f"(image outputs: {listed})"
                )
            output["node"] = images[0]
        if not isinstance(output["node"], str) or output["node"] not in prompt:
            _invalid(f"output: node: {output['node']!r} is not a node of the workflow")
        output.setdefault("format", DEFAULT_FORMAT)
        return output

    @staticmethod
    def feeding(prompt: Prompt, output_node: str) -> Prompt:
        """The output node and every node it depends on, in the prompt's order."""
        keep = {output_node}
        pending = [output_node]
        while pending:
            for value in prompt[pending.pop()]["inputs"].values():
                if is_link(value) and str(value[0]) in prompt and str(value[0]) not in keep:
                    keep.add(str(value[0]))
                    pending.append(str(value[0]))
        return {node_id: node for node_id, node in prompt.items() if node_id in keep}

    # -- fields ------------------------------------------------------------------------------------------

    def refs(self, name: str, spec: Mapping[str, Any]) -> list[list[str]]:
        where = f"field '{name}'"
        if "input" in spec and "sets" in spec:
            _invalid(f"{where}: give input or sets, not both")
        raw = spec.get("input", spec.get("sets", []))
        if isinstance(raw, list) and len(raw) == 2 and all(isinstance(part, str) for part in raw):
            raw = [raw]
        if not isinstance(raw, list) or not all(
            isinstance(ref, list) and len(ref) == 2 and all(isinstance(part, str) for part in ref)
            for ref in raw
        ):
            _invalid(f'{where}: input must be ["node id", "input name"] or a list of them')
        return [list(ref) for ref in raw]

    def target(self, name: str, ref: list[str], prompt: Prompt, full: Prompt, output_node: str) -> InputSpec:
        """The input a field sets, checked before anything is inferred from it."""
        where = f"field '{name}'"
        node_id, input_name = ref
        if node_id not in prompt:
            if node_id in full:
                _invalid(
                    f"{where}: node {node_id} does not feed the output node {output_node}, so it never runs"
                )
            _invalid(f"{where}: input {node_id}.{input_name}: the workflow has no node {node_id}")
        definition = self.definition(prompt[node_id]["class_type"])
        spec = definition.inputs.get(input_name)
        if spec is None:
            known = ", ".join(definition.inputs) or "none"
            _invalid(
                f"{where}: {definition.class_type} (node {node_id}) has no input {input_name!r} "
                f"(inputs: {known})"
            )
        if is_link(prompt[node_id]["inputs"].get(input_name)):
            source = prompt[node_id]["inputs"][input_name][0]
            _invalid(
                f"{where}: {node_id}.{input_name} ({definition.class_type}) is linked to node {source}; "
                "a field sets a widget input that holds a value"
            )
        if not spec.is_widget:
            _invalid(
                f"{where}: {node_id}.{input_name} ({definition.class_type}) is a {spec.type} socket "
                "that only takes a link"
            )
        return spec

    def field(self, name: str, value: Any, prompt: Prompt, full: Prompt, output_node: str) -> dict[str, Any]:
        where = f"field '{name}'"
        if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
            _invalid(f"fields: {str(name)[:80]!r} must be a name of letters, digits and '_' (at most 64)")
        if not isinstance(value, Mapping):
            _invalid(f"{where}: must be an object")
        refs = self.refs(name, value)
        field = {key: item for key, item in value.items() if key not in ("input", "sets")}
        if not refs:  # an accepted_only field, the output format's, or one that only derives
            return field
        field["sets"] = refs
        specs = [self.target(name, ref, prompt, full, output_node) for ref in refs]
        first, current = specs[0], prompt[refs[0][0]]["inputs"].get(refs[0][1])
        kind = field.setdefault("type", FIELD_TYPE_OF_INPUT[first.type])
        if kind == "string" and "enum" not in field and "derive" not in field:
            choices = [c for c in first.choices or () if all(c in (s.choices or ()) for s in specs[1:])]
            if first.type == "COMBO":
                field["enum"] = choices
        if kind in ("integer", "number") and "enum" not in field:
            self.bounds(field, specs, kind)
        seed_like = kind == "integer" and first.control_values == 1
        required = field.get("required") is True
        if seed_like and "random" not in field and "default" not in field and not required:
            field["random"] = True
        if not required and not field.get("random") and "default" not in field and _plain(current):
            field["default"] = current
        if kind == "integer" and "multiple_of" not in field and not field.get("random"):
            step = first.options.get("step")
            low = field.get("minimum", 0)
            default = field.get("default", low)
            if (
                _is_int(step)
                and step > 1
                and _is_int(low)
                and low % step == 0
                and _is_int(default)
                and default % step == 0
            ):
                field["multiple_of"] = step
        tooltip = first.options.get("tooltip")
        if "description" not in field and isinstance(tooltip, str):
            field["description"] = tooltip
        return field

    @staticmethod
    def bounds(field: dict[str, Any], specs: list[InputSpec], kind: str) -> None:
        """The range every bound input accepts, where the declaration names none."""
        lows = [s.options["min"] for s in specs if _is_number(s.options.get("min"))]
        highs = [s.options["max"] for s in specs if _is_number(s.options.get("max"))]
        if "minimum" not in field and lows:
            low = max(lows)
            field["minimum"] = math.ceil(low) if kind == "integer" else low
        if "maximum" not in field and highs:
            high = min(highs)
            field["maximum"] = math.floor(high) if kind == "integer" else high

    # -- the whole -------------------------------------------------------------------------------------

    def compile(self, request: Any) -> Compiled:
        if not isinstance(request, Mapping):
            _invalid("the body must be a JSON object declaring the endpoint")
        unknown = sorted(set(request) - REQUEST_KEYS)
        if unknown:
            _invalid(
                f"unknown key(s) {', '.join(map(str, unknown))[:200]} "
                f"(allowed: {', '.join(sorted(REQUEST_KEYS))})"
            )
        name = check_name(request.get("name"))
        replace = request.get("replace", False)
        if not isinstance(replace, bool):
            _invalid("replace: must be true or false")
        api = request.get("api", ["segmind", "fal"] if "/" in name else "segmind")
        apis = api if isinstance(api, list) else [api]
        if not apis or not all(isinstance(a, str) and a in APIS for a in apis):
            _invalid(f"api: must be one of {', '.join(APIS)}, or a list of them")
        full, editor_workflow = self.prompt(request.get("workflow"))
        output = self.output(request.get("output"), full)
        prompt = self.feeding(full, output["node"])
        declared = request.get("fields")
        if not isinstance(declared, Mapping) or not declared:
            _invalid("fields: must be an object declaring at least one request field")
        if len(declared) > FIELD_LIMIT:
            _invalid(f"fields: at most {FIELD_LIMIT} fields")
        fields = {
            name: self.field(name, value, prompt, full, output["node"]) for name, value in declared.items()
        }
        template: dict[str, Any] = {
            "api": apis[0] if len(apis) == 1 else apis,
            "title": request.get("title", name),
            "description": request.get("description", ""),
            "prompt": prompt,
            "output": output,
            "fields": fields,
            "published": True,
        }
        pricing = request.get("pricing")
        if pricing is not None:  # a field a price term names affects the price: say so for the publisher
            template["pricing"] = pricing
            for term in _terms(pricing):
                if isinstance(term, Mapping) and isinstance(fields.get(term.get("field")), dict):
                    fields[term["field"]].setdefault("affects_price", True)
        if "response" in request:
            template["response"] = request["response"]
        elif "fal" in apis:  # fal's answers repeat the seed and the prompt
            echo = [n for n, f in fields.items() if f.get("random") is True or n == "prompt"]
            if echo:
                template["response"] = {"echo": echo}
        if editor_workflow is not None:
            template["workflow"] = editor_workflow
        return Compiled(name, template, replace)


def _terms(pricing: Any) -> list[Any]:
    if not isinstance(pricing, Mapping):
        return []
    return [
        term for key in ("add", "multiply") if isinstance(pricing.get(key), list) for term in pricing[key]
    ]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain(value: Any) -> bool:
    """A widget value a field can take as its default (not a link, not a wrapped list)."""
    return isinstance(value, str | bool) or _is_number(value)


def compile_template(request: Any, registry: NodeRegistry) -> Compiled:
    """The template a publish request declares, with what the node definitions imply filled in."""
    return _Compiler(registry).compile(request)


def _checked(compiled: Compiled, path: Path, registry: NodeRegistry) -> Endpoint:
    """The endpoint with start-up's checks; the messages name the field or node, not the file."""
    try:
        endpoint = check_template(compiled.template, path, compiled.name, registry)
    except EndpointError as exc:
        raise PublishError("invalid", str(exc).removeprefix(f"{path}: ")) from exc
    if endpoint.unavailable is not None:
        raise PublishError(
            "cannot_run", f"'{compiled.name}' cannot run on this server: {endpoint.unavailable}"
        )
    return endpoint


def publish(
    request: Any,
    directory: Path,
    registry: NodeRegistry,
    endpoints: Mapping[str, Endpoint],
    *,
    dry_run: bool = False,
) -> Endpoint:
    """Compile, check and write a published endpoint's template; the endpoint to serve at once.

    A dry run makes every check a publish makes and writes nothing: the editor shows the request schema
    (and any problem) from this same code before the user publishes."""
    compiled = compile_template(request, registry)
    path = template_path(directory, compiled.name)
    existing = endpoints.get(compiled.name)
    if existing is not None and not existing.published:
        raise PublishError(
            "conflict",
            f"'{compiled.name}' is a template shipped in the graphs folder, not a published endpoint: "
            "edit its file, or publish under another name",
        )
    if (existing is not None or path.exists()) and not compiled.replace:
        raise PublishError(
            "conflict", f"an endpoint named '{compiled.name}' exists; send replace: true to replace it"
        )
    endpoint = _checked(compiled, path, registry)
    if not dry_run:
        write_template(path, compiled.template)
    return endpoint


def unpublish(name: str, directory: Path, endpoints: Mapping[str, Endpoint]) -> Endpoint:
    """Delete a published endpoint's template; the endpoint that was served."""
    path = template_path(directory, name)
    endpoint = endpoints.get(name)
    if endpoint is None:
        raise PublishError("not_found", f"no endpoint named '{name}'")
    if not endpoint.published:
        raise PublishError(
            "conflict",
            f"'{name}' is a template shipped in the graphs folder, not a published endpoint: remove its file",
        )
    path.unlink(missing_ok=True)
    if path.parent != directory and not any(path.parent.iterdir()):
        path.parent.rmdir()  # the owner folder of owner/app, now empty
    return endpoint


def write_template(path: Path, template: Mapping[str, Any]) -> None:
    """Write the file whole or not at all: a hidden temporary file (which the loader skips) in the same
    folder, flushed to disk, then renamed over the name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as file:
            json.dump(template, file, indent=2, allow_nan=False)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
