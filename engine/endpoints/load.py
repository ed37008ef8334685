"""Loading the endpoint templates in `graphs/` at start-up.

A template's URL name is its path below the folder without `.json`: `graphs/aura-flow.json` serves
`aura-flow`, `graphs/fal-ai/aura-flow.json` serves `fal-ai/aura-flow`, so a file's place tells where it
is served and nothing can disagree with it. Each file is read, its bindings checked against the node
definitions, and its graph, built with default values, checked by `validate_prompt` as a request would
be. Any problem stops start-up with an EndpointError naming the file, except a missing model file or
tokenizer, or a model file that cannot be used (a damaged header, a pickle, no model this engine runs):
that marks the endpoint unavailable with the reason (a server with one model installed still serves
that model, and one broken download takes down only the endpoints that name it). The tokenizers
prompts are counted with are read here, once, and shared by every endpoint.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine import folders
from engine.diffusion.detect import identify
from engine.diffusion.safetensors_file import WeightsFileError
from engine.endpoints.bindings import check_bindings
from engine.endpoints.declaration import read_endpoint
from engine.endpoints.errors import EndpointError
from engine.endpoints.spec import Api, Endpoint
from engine.endpoints.tokens import Tokenizers
from engine.folders import MODEL_EXTENSIONS
from engine.graph.registry import NodeRegistry
from engine.graph.types import Prompt
from engine.graph.validate import ValidationError, validate_prompt
from engine.graph.workflow import WorkflowError, workflow_to_prompt
from engine.json_file import read_json_file

_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RESERVED = {
    "segmind": frozenset({"requests", "admin"}),
    "fal": frozenset({"v1", "v2", "api", "extensions", "docs"}),
}
"""First path segments other routes use: Segmind's /v2/requests/{id} and /v1/admin/endpoints (which
/v1/{owner}/{app} would shadow), and the /v1, /v2 and ComfyUI (/api, /extensions, /docs) route
families a fal app's /<owner>/<app> would shadow."""

CHECK_PREFIX = "api/template-check"
"""The output prefix the load-time check builds with (nothing runs, so nothing is written)."""


def load_endpoints(directory: Path, registry: NodeRegistry) -> dict[str, Endpoint]:
    """Every `*.json` below `directory` (hidden files and folders aside), by id, in path order."""
    if not directory.is_dir():
        raise EndpointError(f"{directory}: the endpoint templates folder does not exist")
    endpoints: dict[str, Endpoint] = {}
    tokenizers = Tokenizers.from_model_folders()
    for path in sorted(directory.rglob("*.json")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        endpoint_id = relative.with_suffix("").as_posix()
        endpoints[endpoint_id] = load_endpoint(path, endpoint_id, registry, tokenizers)
    return endpoints


def load_endpoint(
    path: Path, endpoint_id: str, registry: NodeRegistry, tokenizers: Tokenizers | None = None
) -> Endpoint:
    data = read_json_file(path, EndpointError)
    return check_template(data, path, endpoint_id, registry, tokenizers)


def check_template(
    data: Any, path: Path, endpoint_id: str, registry: NodeRegistry, tokenizers: Tokenizers | None = None
) -> Endpoint:
    """The endpoint a template's JSON declares, with every check start-up makes (the template is not
    read from `path`, which only names it in messages): publishing checks a template this way before
    its file is written."""
    endpoint = read_endpoint(endpoint_id, path, data, tokenizers or Tokenizers.from_model_folders())
    check_endpoint_id(endpoint_id, endpoint.apis, path)
    check_bindings(endpoint, registry)
    if "workflow" in endpoint.template:
        _check_workflow(endpoint, registry)
    prompt = endpoint.build(endpoint.defaults(), output_prefix=CHECK_PREFIX)
    missing_tokenizers = _missing_tokenizers(endpoint)
    if missing_tokenizers is None:
        _check_token_bounds(endpoint)
    reasons = [
        _missing_models(endpoint, prompt, registry),
        _unusable_models(prompt, registry),
        missing_tokenizers,
    ]
    return replace(endpoint, unavailable="; ".join(r for r in reasons if r) or None)


def check_endpoint_id(endpoint_id: str, apis: tuple[Api, ...], path: Path) -> None:
    """An id the endpoint's routes can serve: one segment for Segmind's /v1/<name>, owner/app when fal
    serves it too (Segmind's routes then serve /v1/<owner>/<app>), and no first segment other routes use."""
    segments = endpoint_id.split("/")
    fal = "fal" in apis
    styles = " and ".join(apis)
    if len(segments) != (2 if fal else 1) or not all(_SEGMENT.fullmatch(s) for s in segments):
        shape = "owner/app" if fal else "a name"
        raise EndpointError(
            f"{path}: a {styles} endpoint's path below the graphs folder must be {shape} "
            f"(letters, digits, '.', '_', '-'), not {endpoint_id!r}"
        )
    if any(segments[0] in RESERVED[api] for api in apis):
        raise EndpointError(
            f"{path}: {segments[0]!r} cannot start a {styles} endpoint's path: other routes use it"
        )


def _check_workflow(endpoint: Endpoint, registry: NodeRegistry) -> None:
    """The editor workflow kept for export must still be the graph served: converted as the editor
    converts it, every node of the template must come out the same (nodes that do not feed the output,
    such as previews, are left out of the template)."""
    try:
        converted = workflow_to_prompt(endpoint.template["workflow"], registry)
    except WorkflowError as exc:
        raise EndpointError(f"{endpoint.source}: workflow: {exc}") from exc
    for node_id, node in endpoint.graph.items():
        other = converted.get(node_id)
        if other is None or (other["class_type"], other["inputs"]) != (node["class_type"], node["inputs"]):
            raise EndpointError(
                f"{endpoint.source}: workflow: node {node_id} ({node['class_type']}) differs from the "
                "template's prompt; the workflow must be the one the prompt was made from"
            )


def _missing_tokenizers(endpoint: Endpoint) -> str | None:
    """Reads each tokenizer the endpoint counts prompts with (now, so no request waits for it)."""
    limits = {field.max_tokens for field in endpoint.fields.values() if field.max_tokens is not None}
    problems = {problem for limit in limits if (problem := limit.tokenizers.problem(limit.tokenizer))}
    return f"missing tokenizer(s): {'; '.join(sorted(problems))}" if problems else None


def _check_token_bounds(endpoint: Endpoint) -> None:
    """A default or example prompt must keep to its field's token bound, as a request's must (they are
    checked here, not when the file is read, because only now are the tokenizers known to be there)."""
    for field in endpoint.fields.values():
        for key in ("default", "example"):
            value = getattr(field, key)
            if field.max_tokens is not None and isinstance(value, str):
                error = field.max_tokens.check(field.name, value)
                if error is not None:
                    raise EndpointError(f"{endpoint.source}: field '{field.name}': {key}: {error['message']}")


def _is_missing_model(error: ValidationError) -> bool:
    received = error.extra_info.get("received_value")
    return (
        error.type == "value_not_in_list"
        and isinstance(received, str)
        and received.lower().endswith(MODEL_EXTENSIONS)
    )


def _missing_models(endpoint: Endpoint, prompt: Prompt, registry: NodeRegistry) -> str | None:
    """Validate the default request's graph; a model file not in its loader's list makes the endpoint
    unavailable (the reason names the files), any other error is the template's and stops start-up."""
    result = validate_prompt(registry, prompt)
    if result.error is not None and not result.node_errors:
        raise EndpointError(f"{endpoint.source}: the graph does not validate: {result.error.message}")
    missing: list[str] = []
    for node_id, node_errors in result.node_errors.items():
        for error in node_errors.errors:
            if _is_missing_model(error):
                name = error.extra_info.get("input_name")
                missing.append(f"{error.extra_info['received_value']} ({node_errors.class_type}.{name})")
            else:
                raise EndpointError(
                    f"{endpoint.source}: the graph with default values fails validation at node {node_id} "
                    f"({node_errors.class_type}): {error.message}: {error.details}"
                )
    return f"missing model file(s): {', '.join(missing)}" if missing else None


def _model_files(prompt: Prompt, registry: NodeRegistry) -> list[Path]:
    """The model files the graph's loaders name. A loader lists its folder's files as its combo, so the
    folder is the one whose listing the combo is (this holds for custom loaders written against
    ComfyUI's folder_paths too); names no folder lists are the missing ones, reported apart."""
    listings = {folder: tuple(folders.get_filename_list(folder)) for folder in folders.current().model_paths}
    paths: list[Path] = []
    for node in prompt.values():
        inputs = registry.definition(node["class_type"]).inputs
        for name, value in node["inputs"].items():
            spec = inputs.get(name)
            if spec is None or not isinstance(value, str) or not value.lower().endswith(MODEL_EXTENSIONS):
                continue
            for folder, listing in listings.items():
                if listing == spec.choices and value in listing:
                    paths.append(folders.get_full_path(folder, value))
    return list(dict.fromkeys(paths))


def _unusable_models(prompt: Prompt, registry: NodeRegistry) -> str | None:
    """Read the header of each model file the graph names (no tensor): a file that would fail every
    request (a damaged or truncated header, a pickle, no model this engine runs) is named with what is
    wrong with it, once at start instead of in each failed job."""
    problems = []
    for path in _model_files(prompt, registry):
        try:
            identify(path)
        except WeightsFileError as exc:
            problems.append(str(exc))
    return f"unusable model file(s): {'; '.join(problems)}" if problems else None
