"""A ComfyUI client written the way ComfyUI's own `script_examples/websockets_api_example.py` is: open
/ws with a clientId, POST /prompt with that client_id, read the socket until `executing` names no node
for the prompt, then GET /history/{prompt_id} and fetch each image.

Images are fetched with GET /view when the server has that route; until it does, from the output
folder, where /view would read them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

Frame = tuple[str, dict[str, Any]] | bytes
"""A text message as (type, data), or a binary frame as its bytes."""


class ComfyClient:
    def __init__(self, url: str, key: str | None = None, client_id: str | None = None) -> None:
        self.url = url
        self.client_id = client_id or uuid.uuid4().hex
        self.headers = {"x-api-key": key} if key else {}
        self.http = httpx.Client(base_url=url, headers=self.headers, timeout=120)
        self.socket: ClientConnection | None = None
        self.connected: Frame | None = None
        """The first message the server sent on connect."""

    def __enter__(self) -> ComfyClient:
        ws_url = self.url.replace("http://", "ws://", 1) + f"/ws?clientId={self.client_id}"
        self.socket = connect(ws_url, additional_headers=self.headers, max_size=2**24, legacy=True)
        self.connected = self.receive(10)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.socket is not None:
            self.socket.close()
        self.http.close()

    def receive(self, timeout: float) -> Frame:
        assert self.socket is not None
        data = self.socket.recv(timeout=timeout)
        if isinstance(data, bytes):
            return data
        message = json.loads(data)
        return message["type"], message["data"]

    def send(self, kind: str, data: dict[str, Any]) -> None:
        assert self.socket is not None
        self.socket.send(json.dumps({"type": kind, "data": data}))

    def queue_prompt(self, prompt: dict[str, Any], **fields: Any) -> httpx.Response:
        return self.http.post("/prompt", json={"prompt": prompt, "client_id": self.client_id, **fields})

    def queue(self, prompt: dict[str, Any], **fields: Any) -> str:
        """Queue a prompt that must be accepted; its prompt_id."""
        response = self.queue_prompt(prompt, **fields)
        assert response.status_code == 200, response.text
        return str(response.json()["prompt_id"])

    def until(self, done: Callable[[Frame], bool], timeout: float = 300) -> list[Frame]:
        """Every frame up to and including the first for which `done` is true."""
        frames: list[Frame] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no awaited message within {timeout}s; the last: {frames[-5:]}"
            frames.append(self.receive(remaining))
            if done(frames[-1]):
                return frames

    def until_done(self, prompt_id: str, timeout: float = 300) -> list[Frame]:
        """Every frame up to and including `executing` with node null for this prompt."""
        return self.until(
            lambda frame: frame == ("executing", {"node": None, "prompt_id": prompt_id}), timeout
        )

    def until_running(self, prompt_id: str, node: str, timeout: float = 300) -> list[Frame]:
        """Every frame up to and including `executing` of this node of this prompt."""
        started = ("executing", {"node": node, "display_node": node, "prompt_id": prompt_id})
        return self.until(lambda frame: frame == started, timeout)

    def history(self, prompt_id: str) -> dict[str, Any]:
        response = self.http.get(f"/history/{prompt_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def image(self, image: dict[str, str], output_dir: Path) -> bytes:
        params = {"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]}
        response = self.http.get("/view", params=params)
        if response.status_code == 404 and "no such route" in response.text:  # /view is not built yet
            return (output_dir / image["subfolder"] / image["filename"]).read_bytes()
        assert response.status_code == 200, response.text
        return response.content


def texts(frames: list[Frame], prompt_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The text messages, only those about `prompt_id` if given (status messages name no prompt)."""
    return [
        frame
        for frame in frames
        if isinstance(frame, tuple) and (prompt_id is None or frame[1].get("prompt_id") == prompt_id)
    ]
