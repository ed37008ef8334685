"""The records the job system stores and passes across its boundaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from engine.graph.messages import Message


class JobStatus(StrEnum):
    QUEUED = "QUEUED"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class OutputFile:
    """One file a job produced, relative to the output folder."""

    filename: str
    subfolder: str
    content_type: str
    width: int
    height: int
    size: int

    @property
    def relative_path(self) -> str:
        return f"{self.subfolder}/{self.filename}" if self.subfolder else self.filename

    def to_json(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "subfolder": self.subfolder,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputFile:
        return cls(
            **{key: data[key] for key in ("filename", "subfolder", "content_type", "width", "height", "size")}
        )


@dataclass(frozen=True)
class RunReport:
    """What a run showed, as ComfyUI's history reports it: the UI output of every node that had one
    (cached ones included), the node each is shown as in the editor, and the status messages in order."""

    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    display_nodes: dict[str, str] = field(default_factory=dict)
    messages: list[Message] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "outputs": self.outputs,
            "display_nodes": self.display_nodes,
            "messages": [list(message) for message in self.messages],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunReport:
        return cls(
            outputs=data.get("outputs", {}),
            display_nodes=data.get("display_nodes", {}),
            messages=[(kind, body) for kind, body in data.get("messages", [])],
        )


@dataclass(frozen=True)
class NewJob:
    """What the API hands the store on submit."""

    id: str
    endpoint: str
    api: str
    """Which API style accepted it ("segmind", "fal"): decides how status and results are shown."""
    params: dict[str, Any]
    prompt: dict[str, Any]
    output_node: str
    cost: float
    key_id: str | None = None
    idempotency_key: str | None = None
    webhook_url: str | None = None
    base_url: str = ""
    """The URL the client reached the server through, for the absolute URLs in results and webhooks."""
    number: float | None = None
    """The place in the queue (ComfyUI's `number`): lower runs first. None: the order of arrival."""
    front: bool = False
    """Ahead of every job queued so far (ComfyUI's `front`); ignored when `number` is given."""
    extra_data: dict[str, Any] = field(default_factory=dict)
    """ComfyUI's extra_data (client_id, extra_pnginfo for the saved images' metadata, create_time)."""
    targets: tuple[str, ...] | None = None
    """The output nodes to run; None: every output node of the graph."""


@dataclass(frozen=True)
class Job:
    id: str
    seq: int
    endpoint: str
    api: str
    status: JobStatus
    params: dict[str, Any]
    prompt: dict[str, Any]
    output_node: str
    cost: float
    key_id: str | None
    idempotency_key: str | None
    webhook_url: str | None
    base_url: str
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    outputs: list[OutputFile] = field(default_factory=list)
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    progress: tuple[float, float] | None = None
    attempts: int = 0
    cancel_requested: bool = False
    number: float = 0.0
    """The place in the queue: the submitted `number`, or the arrival order (`seq`, negated for `front`)."""
    extra_data: dict[str, Any] = field(default_factory=dict)
    targets: list[str] | None = None
    report: RunReport | None = None
    """What the run showed, once it has finished running (None if it never ran, or before this was kept)."""

    @property
    def client_id(self) -> str | None:
        """The ComfyUI client (a websocket's clientId) that submitted the job, which hears its progress."""
        client_id = self.extra_data.get("client_id")
        return client_id if isinstance(client_id, str) else None


@dataclass(frozen=True)
class LogLine:
    message: str
    timestamp: float


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    balance: float
    reserved: float
    rate_per_minute: int
    created_at: float
    revoked_at: float | None = None
    admin: bool = False
    """May manage endpoints (publish, unpublish, export, import), besides running them."""

    @property
    def available(self) -> float:
        return self.balance - self.reserved


class InsufficientCredits(Exception):
    def __init__(self, needed: float, available: float) -> None:
        super().__init__(f"this request costs {needed:g} credits; the key has {available:g} available")
        self.needed = needed
        self.available = available
