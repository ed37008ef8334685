"""What a run showed, collected from its events for ComfyUI's history (the job's `RunReport`)."""

from __future__ import annotations

from typing import Any

from engine.graph.events import Event, NodeFinished, NodesCached
from engine.graph.messages import STATUS_MESSAGES, Message, json_safe, message
from engine.jobs.types import RunReport


class RunRecorder:
    """Fed every event of one run (on the executor's thread), it keeps the status messages ComfyUI's
    history lists and which node each UI output is shown as; `report` adds the outputs themselves."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.display_nodes: dict[str, str] = {}
        self._cached: dict[str, Any] | None = None

    def observe(self, event: Event, timestamp: int) -> None:
        """Note an event that happened at `timestamp` (ms), the time its live message carries too."""
        if isinstance(event, NodeFinished) and event.output is not None:
            self.display_nodes[event.node_id] = event.display_node
        found = message(event, timestamp)
        if found is None or found[0] not in STATUS_MESSAGES:
            return
        kind, data = found
        if isinstance(event, NodesCached) and self._cached is not None:
            self._cached["nodes"].extend(data["nodes"])  # ComfyUI lists every cache hit in one message
            return
        if kind == "execution_cached":
            self._cached = data
        self.messages.append((kind, data))

    def report(self, outputs: dict[str, Any]) -> RunReport:
        """The report, with the run's UI outputs (every output node's, cached or not) as plain JSON."""
        return RunReport(
            outputs=json_safe(outputs),
            display_nodes={node: self.display_nodes.get(node, node) for node in outputs},
            messages=list(self.messages),
        )
