"""Sharing an endpoint as one file: an editor workflow carrying the endpoint's declaration.

The file is a ComfyUI UI-format workflow, so it opens in the official editor and runs in ComfyUI as it
is; the declaration rides in the workflow's `extra` object, which the editor keeps when it saves:

    extra.engine_endpoint = {"version": 1, "name", "title", "description", "api", "fields",
                             "output", "pricing", "response"}

in the publish declaration's format (engine.endpoints.publish), written out in full (`sets`, types,
bounds), with node ids that are the workflow's. An endpoint published from the editor is shared with the
editor's own workflow; any other is laid out from its API prompt (engine.graph.workflow_from_prompt),
and the layout is converted back before it is handed out, so a file that would not give the same graph
is never shared. Importing reads the file back into a publish declaration: the workflow is converted as
the editor converts it, and publishing checks it against this server's nodes and models.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from engine.endpoints.publish import PublishError
from engine.endpoints.spec import Endpoint
from engine.graph.registry import NodeRegistry
from engine.graph.types import Prompt, is_link
from engine.graph.workflow import WorkflowError, is_workflow, workflow_to_prompt
from engine.graph.workflow_from_prompt import prompt_to_workflow

EXTRA_KEY = "engine_endpoint"
VERSION = 1
DECLARATION_KEYS = ("title", "description", "api", "fields", "output", "pricing", "response")
"""What of a template the shared declaration carries (not its prompt: the workflow is the graph)."""


def _renumber_refs(refs: Any, ids: Mapping[str, str]) -> Any:
    return [[ids[node], name] for node, name in refs]


def _declaration(endpoint: Endpoint, ids: Mapping[str, str]) -> dict[str, Any]:
    """The template's declaration with its node ids turned into the workflow's."""
    declaration: dict[str, Any] = {"version": VERSION, "name": endpoint.id}
    for key in DECLARATION_KEYS:
        if key in endpoint.template:
            declaration[key] = copy.deepcopy(endpoint.template[key])
    for field in declaration["fields"].values():
        if "sets" in field:
            field["sets"] = _renumber_refs(field["sets"], ids)
        if "derive" in field:
            targets = field["derive"]["sets"]
            field["derive"]["sets"] = {name: _renumber_refs(refs, ids) for name, refs in targets.items()}
    declaration["output"]["node"] = ids[declaration["output"]["node"]]
    return declaration


def _renumbered(prompt: Prompt, ids: Mapping[str, str]) -> Prompt:
    renamed: Prompt = {}
    for node_id, node in prompt.items():
        inputs = {
            name: [ids[str(value[0])], value[1]] if is_link(value) else value
            for name, value in node["inputs"].items()
        }
        renamed[ids[node_id]] = {"class_type": node["class_type"], "inputs": inputs}
    return renamed


def _check_round_trip(workflow: Mapping[str, Any], prompt: Prompt, registry: NodeRegistry) -> None:
    """Converted as the editor converts it, the workflow must give every input of the prompt back (a
    widget the prompt leaves out may come back at its default)."""
    back = workflow_to_prompt(workflow, registry)
    for node_id, node in prompt.items():
        other = back.get(node_id)
        if other is None or other["class_type"] != node["class_type"]:
            raise PublishError(
                "invalid", f"node {node_id} ({node['class_type']}) cannot be drawn in the editor"
            )
        for name, value in node["inputs"].items():
            if other["inputs"].get(name) != value:
                raise PublishError(
                    "invalid",
                    f"node {node_id} ({node['class_type']}) input '{name}' does not survive the editor's "
                    "conversion, so the endpoint cannot be shared as a workflow",
                )


def export_workflow(endpoint: Endpoint, registry: NodeRegistry) -> dict[str, Any]:
    """The one-file share of `endpoint`: an editor workflow whose `extra` declares the endpoint."""
    editor_workflow = endpoint.template.get("workflow")
    if editor_workflow is not None:
        workflow = copy.deepcopy(dict(editor_workflow))
        ids = {node_id: node_id for node_id in endpoint.graph}  # the graph was converted from it
    else:
        try:
            laid_out = prompt_to_workflow(endpoint.graph, registry)
        except WorkflowError as exc:
            raise PublishError("invalid", f"the graph cannot be drawn as an editor workflow: {exc}") from exc
        workflow = laid_out.workflow
        ids = {node_id: str(number) for node_id, number in laid_out.ids.items()}
        _check_round_trip(workflow, _renumbered(endpoint.graph, ids), registry)
    extra = workflow.get("extra")
    workflow["extra"] = {
        **(extra if isinstance(extra, Mapping) else {}),
        EXTRA_KEY: _declaration(endpoint, ids),
    }
    return workflow


def import_request(data: Any, *, name: str | None = None, replace: bool = False) -> dict[str, Any]:
    """The publish declaration a shared file makes (its workflow still in editor format; publishing
    converts and checks it). `name` publishes it under another name, with the API styles that name's
    shape takes (a name: Segmind's; owner/app: Segmind's and fal's)."""
    if not is_workflow(data):
        raise PublishError("invalid", "the file is not an editor workflow (an object with nodes and links)")
    extra = data.get("extra")
    declaration = extra.get(EXTRA_KEY) if isinstance(extra, Mapping) else None
    if not isinstance(declaration, Mapping):
        raise PublishError(
            "invalid", f"the workflow declares no endpoint: its extra.{EXTRA_KEY} object is missing"
        )
    if declaration.get("version") != VERSION:
        raise PublishError(
            "invalid",
            f"extra.{EXTRA_KEY}.version: {declaration.get('version')!r} is not {VERSION}, "
            "the version this server reads",
        )
    workflow = {key: value for key, value in data.items() if key != "extra"}
    workflow["extra"] = {key: value for key, value in extra.items() if key != EXTRA_KEY}
    request = {key: value for key, value in declaration.items() if key != "version"}
    if name is not None:
        request["name"] = name
        request.pop("api", None)
    request["workflow"] = workflow
    request["replace"] = replace
    return request
