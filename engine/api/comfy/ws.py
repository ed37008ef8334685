"""GET /ws: ComfyUI's websocket, the live view of prompts the editor and ComfyUI's scripts rely on.

On connect the client gets `status` (the queue length and its `sid`, the `clientId` it asked for or a
fresh one); a `feature_flags` message as its first message is answered with the server's flags. Then:
`status` to everyone whenever ComfyUI's queue changes, and to the client that submitted a prompt (by
its client_id; every client of the same key when the prompt named none) the prompt's execution_start,
execution_cached, executing, progress, progress_state, executed, execution_success / execution_error /
execution_interrupted, a binary preview frame per sampler step (4-byte big-endian type 1, 4-byte format
1 = JPEG, the JPEG), and last `executing` with node null once the prompt's history is stored.

The messages come from the job broadcast (executor -> worker -> broadcast -> here), which this module
listens to only while a client is connected. Each client has its own outbox and writer, so a slow one
loses its oldest messages instead of holding up the others.

A browser page may open a websocket to any host, and the upgrade carries no CORS check: the handshake
passes engine.api.origin like every state-changing request, so another site cannot watch prompts from
a visitor's browser.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from engine.api.comfy import add_route
from engine.api.comfy.info import server_features
from engine.api.comfy.records import COMFY_API, FINISHED, queue_info, queue_remaining
from engine.api.context import SERVICE, api_key, service
from engine.api.errors import ApiError, strict_dumps
from engine.graph.events import NodeFinished, NodeProgress, NodeStarted
from engine.graph.messages import Message, message, timestamp_ms
from engine.jobs.broadcast import JobUpdate
from engine.jobs.store import StoreUnavailable
from engine.service import Service

log = logging.getLogger(__name__)

PREVIEW_IMAGE = 1
"""Binary frame type of a preview image (ComfyUI's BinaryEventTypes.PREVIEW_IMAGE)."""
JPEG = 1
MAX_CLIENT_ID = 256
MAX_INCOMING_BYTES = 64 * 1024
"""Clients send only small JSON messages (feature_flags)."""
HEARTBEAT_SECONDS = 30.0
OUTBOX_LIMIT = 1024
JOB_INFO_LIMIT = 4096


@dataclass(frozen=True)
class _Prompt:
    """Who hears of a job: its API (only ComfyUI's prompts are reported), its client and its key."""

    api: str
    client_id: str | None
    key_id: str | None


class _Client:
    def __init__(self, socket: web.WebSocketResponse, client_id: str, key_id: str | None) -> None:
        self.socket = socket
        self.client_id = client_id
        self.key_id = key_id
        """The caller's key; None with open access, where every prompt may be watched."""
        self.outbox: asyncio.Queue[str | bytes] = asyncio.Queue(OUTBOX_LIMIT)

    def hears(self, prompt: _Prompt) -> bool:
        if self.key_id is not None and prompt.key_id != self.key_id:
            return False
        return prompt.client_id is None or prompt.client_id == self.client_id

    def send(self, frame: str | bytes) -> None:
        if self.outbox.full():  # a client that does not keep up loses the oldest messages
            self.outbox.get_nowait()
        self.outbox.put_nowait(frame)

    def send_message(self, kind: str, data: dict[str, Any]) -> None:
        self.send(strict_dumps({"type": kind, "data": data}))

    async def write_forever(self) -> None:
        while True:
            frame = await self.outbox.get()
            try:
                if isinstance(frame, bytes):
                    await self.socket.send_bytes(frame)
                else:
                    await self.socket.send_str(frame)
            except (ConnectionError, RuntimeError):  # closed under us: the reader ends the connection
                return


class ComfySockets:
    """The connected clients, and while there are any, the task that turns job updates into messages."""

    def __init__(self, engine: Service) -> None:
        self.engine = engine
        self.clients: set[_Client] = set()
        self._task: asyncio.Task[None] | None = None
        self._prompts: OrderedDict[str, _Prompt | None] = OrderedDict()
        self._progress: dict[str, dict[str, dict[str, Any]]] = {}
        """Per running prompt, per node: ComfyUI's progress_state entry."""

    def connect(self, client: _Client) -> None:
        self.clients.add(client)
        if self._task is None:
            self._task = asyncio.create_task(self._forward(), name="comfy-websocket")

    def disconnect(self, client: _Client) -> None:
        """The last client gone, stop listening: the worker then stops encoding a preview per step."""
        self.clients.discard(client)
        if not self.clients and self._task is not None:
            self._task.cancel()
            self._task = None
            self._prompts.clear()
            self._progress.clear()

    async def close(self, _: web.Application) -> None:
        """At shutdown: close every socket, so that stopping the server does not wait on them."""
        for client in list(self.clients):
            await client.socket.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")

    async def _forward(self) -> None:
        with self.engine.all_updates() as updates:
            while True:
                update = await updates.get()
                try:
                    await self._dispatch(update)
                except StoreUnavailable as exc:
                    log.warning("a websocket update was dropped: %s", exc)
                except Exception:  # one bad update must not end every client's stream
                    log.exception("a websocket update failed")

    async def _prompt(self, job_id: str) -> _Prompt | None:
        if job_id in self._prompts:
            return self._prompts[job_id]
        job = await self.engine.job(job_id)
        prompt = _Prompt(job.api, job.client_id, job.key_id) if job is not None else None
        self._prompts[job_id] = prompt
        if len(self._prompts) > JOB_INFO_LIMIT:
            self._prompts.popitem(last=False)
        return prompt

    def _to_everyone(self, kind: str, data: dict[str, Any]) -> None:
        frame = strict_dumps({"type": kind, "data": data})
        for client in self.clients:
            client.send(frame)

    def _to_listeners(self, prompt: _Prompt, frame: str | bytes) -> None:
        for client in self.clients:
            if client.hears(prompt):
                client.send(frame)

    async def _dispatch(self, update: JobUpdate) -> None:
        prompt = await self._prompt(update.job_id)
        if prompt is None or prompt.api != COMFY_API:
            return
        if update.kind == "status":
            await self._queue_changed(update, prompt)
        elif update.kind == "event":
            for frame in self._frames(update):
                self._to_listeners(prompt, frame)

    async def _queue_changed(self, update: JobUpdate, prompt: _Prompt) -> None:
        """Every client hears the new queue length; when a prompt is over (and stored, so its history is
        there to read), its client hears `executing` with node null, as ComfyUI ends every prompt."""
        self._to_everyone("status", {"status": queue_info(await queue_remaining(self.engine))})
        if update.data.get("status") not in FINISHED:
            return
        self._progress.pop(update.job_id, None)
        self._prompts.pop(update.job_id, None)
        job = await self.engine.job(update.job_id)
        if prompt.client_id is not None and job is not None and job.started_at is not None:
            done = {"node": None, "prompt_id": update.job_id}
            self._to_listeners(prompt, strict_dumps({"type": "executing", "data": done}))

    def _frames(self, update: JobUpdate) -> list[str | bytes]:
        """An executor event as ComfyUI's messages, in ComfyUI's order."""
        event = update.event
        assert event is not None
        found = message(event, update.data.get("timestamp", timestamp_ms()))
        frames: list[str | bytes] = []
        if isinstance(event, NodeStarted):
            frames += _texts(found, self._node_state(event.prompt_id, event.node_id, event.display_node))
        elif isinstance(event, NodeProgress):
            state = self._node_state(event.prompt_id, event.node_id, None, event.value, event.total)
            frames += _texts(state, found)
            if update.preview_jpeg is not None:
                frames.append(struct.pack(">II", PREVIEW_IMAGE, JPEG) + update.preview_jpeg)
        elif isinstance(event, NodeFinished) and not event.cached:
            nodes = self._progress.get(event.prompt_id, {})
            entry = nodes.get(event.node_id)
            value = entry["max"] if entry is not None else 1.0
            finished = self._node_state(
                event.prompt_id, event.node_id, event.display_node, value, value, "finished"
            )
            frames += _texts(found, finished)
        else:
            frames += _texts(found)
        return frames

    def _node_state(
        self,
        prompt_id: str,
        node_id: str,
        display_node: str | None,
        value: float = 0.0,
        total: float = 1.0,
        state: str = "running",
    ) -> Message:
        """Update one node's entry and give ComfyUI's progress_state: every node that started so far."""
        nodes = self._progress.setdefault(prompt_id, {})
        entry = nodes.get(node_id)
        shown = display_node or (entry["display_node_id"] if entry is not None else node_id)
        nodes[node_id] = {
            "value": value,
            "max": total,
            "state": state,
            "node_id": node_id,
            "prompt_id": prompt_id,
            "display_node_id": shown,
            "parent_node_id": shown if shown != node_id else None,
            "real_node_id": node_id,
        }
        return "progress_state", {"prompt_id": prompt_id, "nodes": dict(nodes)}


def _texts(*messages: Message | None) -> list[str | bytes]:
    return [strict_dumps({"type": kind, "data": data}) for kind, data in filter(None, messages)]


def _is_feature_flags(text: str) -> bool:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("type") == "feature_flags"


async def websocket(request: web.Request) -> web.StreamResponse:
    client_id = request.query.get("clientId") or uuid.uuid4().hex
    if len(client_id) > MAX_CLIENT_ID:
        raise ApiError(400, f"clientId must be at most {MAX_CLIENT_ID} characters", field="clientId")
    engine = service(request)
    socket = web.WebSocketResponse(heartbeat=HEARTBEAT_SECONDS, max_msg_size=MAX_INCOMING_BYTES)
    await socket.prepare(request)
    key = api_key(request)
    client = _Client(socket, client_id, key.id if key is not None else None)
    client.send_message("status", {"status": queue_info(await queue_remaining(engine)), "sid": client_id})
    writer = asyncio.create_task(client.write_forever(), name="comfy-websocket-writer")
    sockets = request.app[SOCKETS]
    sockets.connect(client)
    try:
        first = True
        async for frame in socket:
            if frame.type == WSMsgType.TEXT and first and _is_feature_flags(frame.data):
                client.send_message("feature_flags", server_features(engine.settings))
            first = False
    finally:
        sockets.disconnect(client)
        writer.cancel()
    return socket


SOCKETS = web.AppKey("comfy_sockets", ComfySockets)


def add_routes(app: web.Application) -> None:
    sockets = ComfySockets(app[SERVICE])
    app[SOCKETS] = sockets
    app.on_shutdown.append(sockets.close)
    add_route(app, "GET", "/ws", websocket)
