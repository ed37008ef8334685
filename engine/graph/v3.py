"""V3 nodes (ComfyUI's `comfy_api.latest` schema) adapted to the V1 contract the executor runs.

A V3 node class becomes a generated V1 class: `INPUT_TYPES()` renders the schema (again on every call,
so dynamic combos stay fresh), `execute` calls the V3 classmethod on a per-call copy of the class that
carries `hidden`, and `validate_inputs` / `fingerprint_inputs` / `check_lazy_status` become
VALIDATE_INPUTS / IS_CHANGED / check_lazy_status with the same parameters. Validation, caching, lazy
inputs, lists and the editor's object_info then need no second path.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import engine.comfy_api
import engine.comfy_api.latest
from engine.comfy_api.latest import ComfyExtension
from engine.comfy_api.latest import _io as io

HIDDEN_NAMES = frozenset(member.name for member in io.Hidden)


def install_comfy_api() -> None:
    """Make `comfy_api.latest` importable by custom node packages (left alone if a real one is loaded)."""
    for name, module in (
        ("comfy_api", engine.comfy_api),
        ("comfy_api.latest", engine.comfy_api.latest),
        ("comfy_api.latest._io", engine.comfy_api.latest._io),  # else a second copy, with its own ComfyNode
        ("comfy_api.latest._ui", engine.comfy_api.latest._ui),
    ):
        sys.modules.setdefault(name, module)


def is_v3_node(cls: object) -> bool:
    return isinstance(cls, type) and issubclass(cls, io.ComfyNode)


def run_awaitable(value: Any) -> Any:
    """V3 hooks may be async; nodes run on a worker thread, so the coroutine gets a loop of its own
    (a fresh thread's if this thread already runs one)."""
    if not inspect.isawaitable(value):
        return value

    async def wait() -> Any:
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, wait()).result()


def entrypoint_nodes(entrypoint: Callable[[], Any]) -> dict[str, type[io.ComfyNode]]:
    """A package's `comfy_entrypoint()` -> its node classes by node_id."""
    extension = run_awaitable(entrypoint())
    if not isinstance(extension, ComfyExtension):
        raise TypeError("comfy_entrypoint() must return a ComfyExtension")
    run_awaitable(extension.on_load())
    nodes: dict[str, type[io.ComfyNode]] = {}
    listed: list[Any] = run_awaitable(extension.get_node_list())
    for node in listed:
        if not is_v3_node(node):
            raise TypeError(f"get_node_list() returned {node!r}, which is not an io.ComfyNode class")
        nodes[node.GET_SCHEMA().node_id] = node
    return nodes


def _v1_answer(answer: Any) -> Any:
    """A NodeOutput as the V1 answer `{"result": (...), "ui": {...}}`; V1-shaped answers pass through."""
    if not isinstance(answer, io.NodeOutput):
        return answer
    ui = answer.ui.as_dict() if hasattr(answer.ui, "as_dict") else answer.ui
    shaped: dict[str, Any] = {"result": answer.args, "ui": ui}
    if answer.expand is not None:
        shaped["expand"] = answer.expand
    return shaped


def _with_hidden(node: type[io.ComfyNode], inputs: dict[str, Any]) -> type[io.ComfyNode]:
    """Hidden values travel on a copy of the class (V3 reads `cls.hidden.unique_id`), never as arguments."""
    hidden = {name: inputs.pop(name) for name in list(inputs) if name in HIDDEN_NAMES}
    return type(node.__name__, (node,), {"hidden": io.HiddenHolder(**hidden), "__module__": node.__module__})


def _same_signature(function: Callable[..., Any], hook: Callable[..., Any]) -> Callable[..., Any]:
    """The validator reads VALIDATE_INPUTS' parameters to know which inputs it checks itself."""
    function.__signature__ = inspect.signature(hook)  # type: ignore[attr-defined]
    return function


def as_v1_class(node: type[io.ComfyNode]) -> type:
    schema = node.GET_SCHEMA()

    def INPUT_TYPES(cls: type) -> dict[str, dict[str, Any]]:
        return node.GET_SCHEMA().input_types()

    def execute(self: object, **inputs: Any) -> Any:
        bound = _with_hidden(node, inputs)
        return _v1_answer(run_awaitable(bound.execute(**inputs)))

    def check_lazy_status(self: object, **inputs: Any) -> Any:
        bound = _with_hidden(node, inputs)
        return run_awaitable(bound.check_lazy_status(**inputs))

    def GET_NODE_INFO_V1(cls: type, python_module: str) -> dict[str, Any]:
        return node.GET_SCHEMA().v1_info(python_module)

    attributes: dict[str, Any] = {
        "__doc__": node.__doc__,
        "__module__": node.__module__,
        "V3_NODE": node,
        "INPUT_TYPES": classmethod(INPUT_TYPES),
        "GET_NODE_INFO_V1": classmethod(GET_NODE_INFO_V1),
        "RETURN_TYPES": tuple(output.io_type for output in schema.outputs),
        "RETURN_NAMES": tuple(output.display_name or output.io_type for output in schema.outputs),
        "OUTPUT_IS_LIST": tuple(output.is_output_list for output in schema.outputs),
        "OUTPUT_TOOLTIPS": tuple(output.tooltip for output in schema.outputs),
        "OUTPUT_NODE": schema.is_output_node,
        "INPUT_IS_LIST": schema.is_input_list,
        "NOT_IDEMPOTENT": schema.not_idempotent,
        "CATEGORY": schema.category,
        "DESCRIPTION": schema.description,
        "DEPRECATED": schema.is_deprecated,
        "EXPERIMENTAL": schema.is_experimental,
        "DISPLAY_NAME": schema.display_name,
        "FUNCTION": "execute",
        "execute": execute,
        "check_lazy_status": check_lazy_status,
    }
    validate = getattr(node, "validate_inputs", None)
    if validate is not None:

        def VALIDATE_INPUTS(**inputs: Any) -> Any:
            return run_awaitable(validate(**inputs))

        attributes["VALIDATE_INPUTS"] = staticmethod(_same_signature(VALIDATE_INPUTS, validate))
    fingerprint = getattr(node, "fingerprint_inputs", None)
    if fingerprint is not None:

        def IS_CHANGED(**inputs: Any) -> Any:
            return run_awaitable(fingerprint(**inputs))

        attributes["IS_CHANGED"] = staticmethod(IS_CHANGED)
    return type(node.__name__, (), attributes)


def adapt(mappings: Mapping[str, type]) -> dict[str, type]:
    """V3 classes in a package's mappings replaced by their V1 form; V1 classes unchanged."""
    return {name: as_v1_class(cls) if is_v3_node(cls) else cls for name, cls in mappings.items()}
