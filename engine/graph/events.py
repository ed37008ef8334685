"""What the executor tells its owner while a prompt runs (the API maps these onto its own messages)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.graph.types import NodeId

UiOutput = Mapping[str, list[Any]]
"""What an output node shows: e.g. {"images": [{"filename", "subfolder", "type"}]} or {"text": [...]}."""


@dataclass(frozen=True)
class ExecutionStarted:
    prompt_id: str


@dataclass(frozen=True)
class NodesCached:
    """These nodes' outputs came from the cache; they will not run. Sent once when the run starts, even
    with no nodes (as ComfyUI's execution_cached), and again for hits met later (lazy inputs, expansions)."""

    prompt_id: str
    nodes: tuple[NodeId, ...]


@dataclass(frozen=True)
class NodeStarted:
    prompt_id: str
    node_id: NodeId
    display_node: NodeId
    """The node the user sees: the node itself, or the node whose expansion created it."""
    class_type: str


@dataclass(frozen=True)
class NodeProgress:
    prompt_id: str
    node_id: NodeId
    value: float
    total: float
    preview: Any = None
    """An optional RGB preview image (PIL) of the work in progress, e.g. the current latent."""


@dataclass(frozen=True)
class NodeFinished:
    prompt_id: str
    node_id: NodeId
    display_node: NodeId
    output: UiOutput | None
    """The node's ui output, if it shows one (always for output nodes that produce images or text)."""
    cached: bool = False


@dataclass(frozen=True)
class ExecutionSucceeded:
    prompt_id: str


@dataclass(frozen=True)
class ExecutionFailed:
    prompt_id: str
    node_id: NodeId
    node_type: str
    exception_message: str
    exception_type: str
    traceback: list[str]
    current_inputs: dict[str, Any] = field(default_factory=dict)
    current_outputs: list[NodeId] = field(default_factory=list)
    executed: list[NodeId] = field(default_factory=list)


@dataclass(frozen=True)
class ExecutionInterrupted:
    prompt_id: str
    node_id: NodeId | None
    node_type: str | None
    executed: list[NodeId] = field(default_factory=list)


Event = (
    ExecutionStarted
    | NodesCached
    | NodeStarted
    | NodeProgress
    | NodeFinished
    | ExecutionSucceeded
    | ExecutionFailed
    | ExecutionInterrupted
)
EventSink = Callable[[Event], None]
