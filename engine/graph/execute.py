"""Running a validated prompt with ComfyUI's semantics (COMFY.md §3).

Work starts from the output nodes and pulls in what they need: a node is staged, its unevaluated
sources are staged before it, and it runs once every input it needs has a value. Lazy inputs are
evaluated only when the node's `check_lazy_status` asks for them; a node may answer with a graph to
run in its place (node expansion); every input is a list and a node is called once per item unless
it takes whole lists. Outputs are cached between runs by signature (see cache.py).

One Executor serves one worker: `run` is not re-entrant, but it may be interrupted from any thread.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import threading
import traceback
from collections import OrderedDict, defaultdict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.graph.cache import NodeOutputs, OutputCache
from engine.graph.events import (
    Event,
    EventSink,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionStarted,
    ExecutionSucceeded,
    NodeFinished,
    NodeProgress,
    NodesCached,
    NodeStarted,
    UiOutput,
)
from engine.graph.node_def import NodeDefinition
from engine.graph.registry import NodeRegistry
from engine.graph.types import NodeId, PromptNode, as_link, is_link
from engine.graph.validate import ValidatedPrompt
from engine.progress import Interrupted, node_context

HIDDEN_VALUES = (
    "PROMPT",
    "UNIQUE_ID",
    "EXTRA_PNGINFO",
    "DYNPROMPT",
    "AUTH_TOKEN_COMFY_ORG",
    "API_KEY_COMFY_ORG",
)
MAX_NODE_INSTANCES = 2048
REPR_LIMIT = 500


class DependencyCycleError(RuntimeError):
    """Nodes that wait on each other (possible only through node expansion once validated)."""


class NodeOutputError(TypeError):
    """A node returned something the node contract does not allow."""


@dataclass
class RunResult:
    prompt_id: str
    status: Literal["success", "error", "interrupted"]
    outputs: dict[NodeId, UiOutput] = field(default_factory=dict)
    """The ui output of every output node that produced one, cached or not."""
    executed: list[NodeId] = field(default_factory=list)
    cached: list[NodeId] = field(default_factory=list)
    failure: ExecutionFailed | ExecutionInterrupted | None = None


def _ignore(_: Event) -> None:
    pass


class NodeResourceError(RuntimeError):
    """A node asks for a resource (a constructor argument) that this executor was not given."""


class Executor:
    def __init__(
        self,
        registry: NodeRegistry,
        cache: OutputCache | None = None,
        resources: Mapping[str, object] | None = None,
    ) -> None:
        """`resources` are what node constructors may ask for by parameter name (the model manager as
        `models`): a node states its dependencies in its signature and the executor passes them in,
        so nothing a node uses is found through a global."""
        self.registry = registry
        self.cache = cache if cache is not None else OutputCache()
        self.resources = dict(resources or {})
        self._instances: OrderedDict[tuple[NodeId, str], Any] = OrderedDict()
        self._instances_lock = threading.Lock()

    def instance(self, node_id: NodeId, definition: NodeDefinition) -> Any:
        """Node objects are reused between runs, as in ComfyUI (some keep state on purpose). Runs may
        overlap (a worker overlapping jobs), so two threads may ask at once."""
        key = (node_id, definition.class_type)
        with self._instances_lock:
            obj = self._instances.get(key)
            if obj is None:
                obj = definition.cls(**self._constructor_arguments(definition))
                self._instances[key] = obj
                if len(self._instances) > MAX_NODE_INSTANCES:
                    self._instances.popitem(last=False)
            else:
                self._instances.move_to_end(key)
            return obj

    def _constructor_arguments(self, definition: NodeDefinition) -> dict[str, object]:
        arguments: dict[str, object] = {}
        for name, parameter in inspect.signature(definition.cls).parameters.items():
            if name in self.resources:
                arguments[name] = self.resources[name]
            elif parameter.default is inspect.Parameter.empty and parameter.kind not in (
                inspect.Parameter.VAR_POSITIONAL,
                inspect.Parameter.VAR_KEYWORD,
            ):
                raise NodeResourceError(
                    f"{definition.class_type} needs '{name}', which this executor does not provide "
                    f"(it provides: {', '.join(sorted(self.resources)) or 'nothing'})"
                )
        return arguments

    def run(
        self,
        validated: ValidatedPrompt,
        *,
        prompt_id: str,
        extra_data: Mapping[str, Any] | None = None,
        on_event: EventSink = _ignore,
        interrupt: threading.Event | None = None,
    ) -> RunResult:
        run = _Run(self, validated, prompt_id, extra_data or {}, on_event, interrupt or threading.Event())
        return run.execute()


class _Run:
    def __init__(
        self,
        executor: Executor,
        validated: ValidatedPrompt,
        prompt_id: str,
        extra_data: Mapping[str, Any],
        on_event: EventSink,
        interrupt: threading.Event,
    ) -> None:
        self.executor = executor
        self.cache = executor.cache
        self.prompt = validated.prompt
        self.targets = validated.outputs
        self.prompt_id = prompt_id
        self.extra_data = extra_data
        self.emit = on_event
        self.interrupt = interrupt

        self.nodes: dict[NodeId, PromptNode] = dict(validated.prompt)
        self.display: dict[NodeId, NodeId] = {}
        self.definitions: dict[str, NodeDefinition] = {}
        self.signatures: dict[NodeId, bytes] = {}

        self.values: dict[NodeId, NodeOutputs] = {}
        self.result = RunResult(prompt_id, "success")
        self.staged: set[NodeId] = set()
        self.blockers: dict[NodeId, set[NodeId]] = {}
        self.waiters: defaultdict[NodeId, set[NodeId]] = defaultdict(set)
        self.ready: list[NodeId] = []
        self.requested_lazy: defaultdict[NodeId, set[str]] = defaultdict(set)
        self.expansions: dict[NodeId, list[tuple[Any, UiOutput | None]]] = {}
        self.newly_cached: list[tuple[NodeId, UiOutput | None]] = []

    # -- bookkeeping ----------------------------------------------------------------------------

    def definition(self, node_id: NodeId) -> NodeDefinition:
        class_type = self.nodes[node_id]["class_type"]
        definition = self.definitions.get(class_type)
        if definition is None:
            definition = self.definitions[class_type] = self.executor.registry.definition(class_type)
        return definition

    def links(self, node_id: NodeId) -> Iterator[tuple[str, NodeId, int]]:
        for name, value in self.nodes[node_id]["inputs"].items():
            if is_link(value):
                source, slot = as_link(value)
                yield name, source, slot

    def needed_links(self, node_id: NodeId) -> Iterator[tuple[str, NodeId, int]]:
        """Links whose values must exist before the node runs: not raw, and not lazy unless asked for."""
        specs = self.definition(node_id).inputs
        for name, source, slot in self.links(node_id):
            spec = specs.get(name)
            if spec is None or spec.raw_link:
                continue
            if spec.lazy and name not in self.requested_lazy[node_id]:
                continue
            yield name, source, slot

    # -- signatures -------------------------------------------------------------------------------

    def signature(self, node_id: NodeId) -> bytes:
        stack = [node_id]
        while stack:
            current = stack[-1]
            if current in self.signatures:
                stack.pop()
                continue
            missing = [source for _, source, _ in self.links(current) if source not in self.signatures]
            if missing:
                if len(stack) > 2 * len(self.nodes):
                    raise DependencyCycleError(f"dependency cycle through node {current}")
                stack.extend(missing)
                continue
            self.signatures[current] = self.compute_signature(current)
            stack.pop()
        return self.signatures[node_id]

    def compute_signature(self, node_id: NodeId) -> bytes:
        node = self.nodes[node_id]
        definition = self.definition(node_id)
        parts: list[Any] = [node["class_type"], self.is_changed(node_id, definition)]
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value):
                source, slot = as_link(value)
                parts.append((name, self.signatures[source], slot))
            else:
                parts.append((name, value))
        if definition.not_idempotent:
            parts.append(("#node", node_id))
        return hashlib.blake2b(repr(parts).encode(), digest_size=16).digest()

    def is_changed(self, node_id: NodeId, definition: NodeDefinition) -> Any:
        method = getattr(definition.cls, "IS_CHANGED", None)
        if method is None:
            return None
        constants = {
            name: value
            for name, value in self.nodes[node_id]["inputs"].items()
            if name in definition.inputs and not is_link(value)
        }
        try:
            answer = method(**constants)
        except Exception:
            answer = float("nan")
        if isinstance(answer, float) and math.isnan(answer):
            return ("never-equal", os.urandom(16))  # ComfyUI: a NaN or failing IS_CHANGED always re-runs
        return answer

    # -- scheduling ---------------------------------------------------------------------------------

    def stage(self, root: NodeId) -> None:
        """Plan `root` and whatever it needs that has no value yet; cache hits stop the walk."""
        stack = [root]
        while stack:
            node_id = stack.pop()
            if node_id in self.values or node_id in self.staged:
                continue
            if self.take_from_cache(node_id):
                continue
            self.staged.add(node_id)
            self.blockers[node_id] = set()
            for _, source, _ in self.needed_links(node_id):
                self.wait_for(node_id, source)
                stack.append(source)
            if not self.blockers[node_id]:
                self.ready.append(node_id)

    def take_from_cache(self, node_id: NodeId) -> bool:
        hit = self.cache.get(self.signature(node_id))
        if hit is None:
            return False
        self.values[node_id] = hit.outputs
        self.result.cached.append(node_id)
        self.newly_cached.append((node_id, hit.ui))
        if hit.ui is not None:
            self.result.outputs[node_id] = hit.ui
        self.staged.discard(node_id)
        self.blockers.pop(node_id, None)
        self.release(node_id)
        return True

    def wait_for(self, node_id: NodeId, source: NodeId) -> None:
        if source not in self.values:
            self.blockers[node_id].add(source)
            self.waiters[source].add(node_id)

    def release(self, node_id: NodeId) -> None:
        for waiter in self.waiters.pop(node_id, ()):
            blockers = self.blockers[waiter]
            blockers.discard(node_id)
            if not blockers:
                self.ready.append(waiter)

    def display_of(self, node_id: NodeId) -> NodeId:
        return self.display.get(node_id, node_id)

    def flush_cached(self, *, announce_none: bool = False) -> None:
        """Announce cache hits, then deliver the ui of cached output nodes as if they had run. With
        `announce_none`, announce even no hits (ComfyUI reports the cached nodes once at every start)."""
        if not self.newly_cached and not announce_none:
            return
        cached, self.newly_cached = self.newly_cached, []
        self.emit(NodesCached(self.prompt_id, tuple(node_id for node_id, _ in cached)))
        for node_id, ui in cached:
            if ui is not None:
                self.emit(NodeFinished(self.prompt_id, node_id, self.display_of(node_id), ui, cached=True))

    # -- the run ------------------------------------------------------------------------------------

    def execute(self) -> RunResult:
        self.emit(ExecutionStarted(self.prompt_id))
        current: NodeId | None = None
        try:
            for output in self.targets:
                self.stage(output)
            self.flush_cached(announce_none=True)
            while self.staged:
                if self.interrupt.is_set():
                    raise Interrupted()
                if not self.ready:
                    raise DependencyCycleError(f"dependency cycle among nodes {sorted(self.staged)}")
                current = self.ready.pop()
                self.step(current)
                self.flush_cached()
        except Interrupted:
            self.result.status = "interrupted"
            node_type = self.nodes[current]["class_type"] if current is not None else None
            self.result.failure = ExecutionInterrupted(
                self.prompt_id, current, node_type, list(self.result.executed)
            )
            self.emit(self.result.failure)
            return self.result
        except Exception as exc:
            self.result.status = "error"
            self.result.failure = self.failure(current, exc)
            self.emit(self.result.failure)
            return self.result
        self.emit(ExecutionSucceeded(self.prompt_id))
        return self.result

    def failure(self, node_id: NodeId | None, exc: Exception) -> ExecutionFailed:
        node_type = self.nodes[node_id]["class_type"] if node_id is not None else ""
        current_inputs: dict[str, Any] = {}
        if node_id is not None:
            for name, value in self.nodes[node_id]["inputs"].items():
                if is_link(value):
                    source, slot = as_link(value)
                    value = self.values[source][slot] if source in self.values else value
                current_inputs[name] = repr(value)[:REPR_LIMIT]
        return ExecutionFailed(
            prompt_id=self.prompt_id,
            node_id=node_id or "",
            node_type=node_type,
            exception_message=str(exc),
            exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}".removeprefix("builtins."),
            traceback=traceback.format_exception(exc),
            current_inputs=current_inputs,
            current_outputs=sorted(self.values),
            executed=list(self.result.executed),
        )

    def step(self, node_id: NodeId) -> None:
        """Run a ready node, or finish one whose expansion has completed."""
        if node_id in self.expansions:
            self.finish_expansion(node_id)
            return
        if self.take_from_cache(node_id):
            return  # an identical node earlier in this run already produced these outputs
        definition = self.definition(node_id)
        if self.request_lazy_inputs(node_id, definition):
            return
        self.emit(NodeStarted(self.prompt_id, node_id, self.display_of(node_id), definition.class_type))
        obj = self.executor.instance(node_id, definition)

        def report(value: float, total: float, preview: Any) -> None:
            self.emit(NodeProgress(self.prompt_id, node_id, value, total, preview))

        with node_context(node_id, report, self.interrupt):
            answers = self.call_over_lists(
                obj, definition.function, definition, self.gather(node_id, definition)
            )

        if any(isinstance(answer, dict) and answer.get("expand") is not None for answer in answers):
            self.start_expansion(node_id, answers)
            return
        outputs, ui = _merge(definition, [_split(node_id, answer) for answer in answers])
        self.complete(node_id, outputs, ui)

    def gather(self, node_id: NodeId, definition: NodeDefinition) -> dict[str, list[Any]]:
        inputs: dict[str, list[Any]] = {}
        for name, value in self.nodes[node_id]["inputs"].items():
            spec = definition.inputs.get(name)
            if spec is None:
                continue  # undeclared inputs never reach the node's function
            if not is_link(value):
                inputs[name] = [value]
            elif spec.raw_link:
                inputs[name] = [list(value)]
            else:
                source, slot = as_link(value)
                inputs[name] = self.values[source][slot] if source in self.values else [None]
        for name, kind in definition.hidden.items():
            inputs[name] = [self.hidden_value(node_id, kind)]
        return inputs

    def hidden_value(self, node_id: NodeId, kind: str) -> Any:
        if kind == "PROMPT":
            return self.prompt
        if kind == "UNIQUE_ID":
            return node_id
        if kind == "EXTRA_PNGINFO":
            return self.extra_data.get("extra_pnginfo")
        if kind == "DYNPROMPT":
            return self.nodes
        if kind in HIDDEN_VALUES:
            return self.extra_data.get(kind.lower())
        return None

    def request_lazy_inputs(self, node_id: NodeId, definition: NodeDefinition) -> bool:
        """Ask the node which lazy inputs it needs; stage them. True when the node must wait."""
        check = getattr(definition.cls, "check_lazy_status", None)
        lazy = [
            (name, source)
            for name, source, _ in self.links(node_id)
            if name in definition.inputs and definition.inputs[name].lazy
        ]
        if check is None or not lazy:
            return False
        obj = self.executor.instance(node_id, definition)
        answers = self.call_over_lists(obj, "check_lazy_status", definition, self.gather(node_id, definition))
        wanted = {name for answer in answers for name in (answer or ())}
        new = [
            (name, source)
            for name, source in lazy
            if name in wanted and name not in self.requested_lazy[node_id]
        ]
        if not new:
            return False
        for name, source in new:
            self.requested_lazy[node_id].add(name)
            self.wait_for(node_id, source)
        for _, source in new:
            self.stage(source)
        if self.blockers[node_id]:
            return True
        return self.request_lazy_inputs(node_id, definition)  # everything asked for came from the cache

    def call_over_lists(
        self, obj: Any, function: str, definition: NodeDefinition, inputs: dict[str, list[Any]]
    ) -> list[Any]:
        method = getattr(obj, function)
        if definition.input_is_list:
            return [method(**inputs)]
        if not inputs:
            return [method()]
        if any(len(values) == 0 for values in inputs.values()):
            return []  # an empty list upstream: nothing to call the node on
        length = max(len(values) for values in inputs.values())
        answers = []
        for index in range(length):
            if index and self.interrupt.is_set():
                raise Interrupted()
            answers.append(
                method(**{name: values[min(index, len(values) - 1)] for name, values in inputs.items()})
            )
        return answers

    def complete(self, node_id: NodeId, outputs: NodeOutputs, ui: UiOutput | None) -> None:
        self.values[node_id] = outputs
        if ui is not None:
            self.result.outputs[node_id] = ui
        self.cache.put(self.signature(node_id), outputs, ui)
        self.result.executed.append(node_id)
        self.emit(NodeFinished(self.prompt_id, node_id, self.display_of(node_id), ui))
        self.staged.discard(node_id)
        self.blockers.pop(node_id, None)
        self.release(node_id)

    # -- node expansion -------------------------------------------------------------------------------

    def start_expansion(self, node_id: NodeId, answers: list[Any]) -> None:
        """Add each call's graph under fresh ids and wait for the nodes its results link to."""
        pending: list[tuple[Any, UiOutput | None]] = []
        for index, answer in enumerate(answers):
            if not (isinstance(answer, dict) and answer.get("expand") is not None):
                result, ui = _split(node_id, answer)
                pending.append((result, ui))
                continue
            graph = answer["expand"]
            graph = graph.finalize() if hasattr(graph, "finalize") else graph
            renamed = {old: f"{node_id}.{index}.{old}" for old in graph}
            for old, node in graph.items():
                new_id = renamed[old]
                inputs = {
                    name: [renamed.get(str(value[0]), str(value[0])), value[1]] if is_link(value) else value
                    for name, value in node.get("inputs", {}).items()
                }
                self.nodes[new_id] = {"class_type": node["class_type"], "inputs": inputs}
                self.display[new_id] = self.display_of(node_id)
            result = tuple(
                [renamed.get(str(value[0]), str(value[0])), value[1]] if is_link(value) else value
                for value in answer.get("result", ())
            )
            pending.append((result, answer.get("ui")))
            for new_id in renamed.values():
                if self.definition(new_id).output_node:
                    self.stage(new_id)
        self.expansions[node_id] = pending
        self.blockers[node_id] = set()
        for result, _ in pending:
            for value in result:
                if is_link(value):
                    self.wait_for(node_id, str(value[0]))
                    self.stage(str(value[0]))
        if not self.blockers[node_id]:
            self.ready.append(node_id)

    def finish_expansion(self, node_id: NodeId) -> None:
        definition = self.definition(node_id)
        resolved = []
        for result, ui in self.expansions.pop(node_id):
            slots = []
            for value in result:
                if is_link(value):
                    source, slot = as_link(value)
                    slots.append(self.values[source][slot])
                else:
                    slots.append([value])
            resolved.append((tuple(slots), ui))
        outputs: list[list[Any]] = [[] for _ in definition.return_types]
        for resolved_slots, _ in resolved:
            for index, values in enumerate(resolved_slots[: len(outputs)]):
                outputs[index].extend(values)
        self.complete(node_id, tuple(outputs), _merge_ui([ui for _, ui in resolved]))


def _split(node_id: NodeId, answer: Any) -> tuple[tuple[Any, ...], UiOutput | None]:
    """A node's answer -> (result tuple, ui)."""
    if answer is None:
        return (), None
    if isinstance(answer, dict):
        result = answer.get("result", ())
        return tuple(result) if result is not None else (), answer.get("ui")
    if isinstance(answer, tuple | list):
        return tuple(answer), None
    raise NodeOutputError(f"node {node_id} returned {type(answer).__name__}; expected a tuple or a dict")


def _merge(
    definition: NodeDefinition, answers: list[tuple[tuple[Any, ...], UiOutput | None]]
) -> tuple[NodeOutputs, UiOutput | None]:
    outputs: list[list[Any]] = []
    for slot, is_list in enumerate(definition.output_is_list):
        values: list[Any] = []
        for result, _ in answers:
            if slot >= len(result):
                raise NodeOutputError(
                    f"{definition.class_type} returned {len(result)} values "
                    f"for {len(definition.return_types)} outputs"
                )
            if is_list:
                values.extend(result[slot])
            else:
                values.append(result[slot])
        outputs.append(values)
    return tuple(outputs), _merge_ui([ui for _, ui in answers])


def _merge_ui(uis: list[UiOutput | None]) -> UiOutput | None:
    present = [ui for ui in uis if ui]
    if not present:
        return None
    merged: dict[str, list[Any]] = {}
    for ui in present:
        for key, values in ui.items():
            merged.setdefault(key, []).extend(values if isinstance(values, list | tuple) else [values])
    return merged
