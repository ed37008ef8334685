"""`comfy_api.latest`: what a V3 custom node package imports (`ComfyExtension`, `io`, `ui`)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from engine.comfy_api.latest import _io as io
from engine.comfy_api.latest import _ui as ui


class ComfyExtension(ABC):
    """What a package's `async def comfy_entrypoint()` returns: the node classes it brings."""

    async def on_load(self) -> None:  # noqa: B027 - optional hook, a no-op unless a package overrides it
        """Called once before `get_node_list`, for set-up a package wants to do at load time."""

    @abstractmethod
    async def get_node_list(self) -> list[type[io.ComfyNode]]: ...


__all__ = ["ComfyExtension", "io", "ui"]
