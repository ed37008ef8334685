"""ComfyUI's read-only information routes: node definitions, the machine, model files, feature flags.

`/object_info` is what the editor builds every node from; `/system_stats` fills its "about" panel and
its memory display; `/models` and `/embeddings` list files of the model folders; `/features` says what
this server supports (the websocket's `feature_flags` reply carries the same object).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from engine import folders
from engine.api.comfy import COMFYUI_VERSION, add_route
from engine.api.context import service
from engine.api.errors import ApiError, json_response
from engine.graph.object_info import object_info
from engine.host_memory import available_memory_bytes, free_memory_bytes
from engine.settings import Settings


def server_features(settings: Settings) -> dict[str, Any]:
    """ComfyUI's server feature flags (GET /features, and the websocket's feature_flags answer): previews
    come as plain JPEG frames without metadata (engine.api.comfy.ws), and the largest upload in bytes."""
    return {"supports_preview_metadata": False, "max_upload_size": settings.max_upload_bytes}


async def get_object_info(request: web.Request) -> web.Response:
    registry = service(request).registry
    return json_response(await asyncio.to_thread(object_info, registry))


async def get_node_info(request: web.Request) -> web.Response:
    """One node's definition keyed by its class, or `{}` for a class this server does not have."""
    registry = service(request).registry
    return json_response(await asyncio.to_thread(object_info, registry, request.match_info["node_class"]))


async def system_stats(request: web.Request) -> web.Response:
    models = service(request).models
    device = models.device_stats()
    return json_response(
        {
            "system": {
                "os": sys.platform,
                "ram_total": available_memory_bytes(),
                "ram_free": free_memory_bytes(),
                "comfyui_version": COMFYUI_VERSION,
                "python_version": sys.version,
                "pytorch_version": models.torch_version,
                "embedded_python": Path(sys.executable).parent.name == "python_embeded",
                "argv": sys.argv,
            },
            "devices": [
                {
                    "name": device.name,
                    "type": device.type,
                    "index": device.index,
                    "vram_total": device.vram_total,
                    "vram_free": device.vram_free,
                    "torch_vram_total": device.torch_vram_total,
                    "torch_vram_free": device.torch_vram_free,
                }
            ],
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    """Embedding names as prompts refer to them: file names without their extension."""
    names = await asyncio.to_thread(folders.get_filename_list, "embeddings")
    return json_response([os.path.splitext(name)[0] for name in names])


async def model_folders(request: web.Request) -> web.Response:
    return json_response(list(folders.current().model_paths))


async def model_files(request: web.Request) -> web.Response:
    folder = request.match_info["folder"]
    try:
        names = await asyncio.to_thread(folders.get_filename_list, folder)
    except folders.UnknownFolderError as exc:
        raise ApiError(404, str(exc), field="folder") from exc
    return json_response(names)


async def features(request: web.Request) -> web.Response:
    return json_response(server_features(service(request).settings))


async def nothing_installed(_: web.Request) -> web.Response:
    """Translations (/i18n) and shared subgraphs (/global_subgraphs) come from custom node packages in
    ComfyUI; the engine's packages declare none, so both are empty objects."""
    return json_response({})


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/object_info", get_object_info)
    add_route(app, "GET", "/object_info/{node_class}", get_node_info)
    add_route(app, "GET", "/system_stats", system_stats)
    add_route(app, "GET", "/embeddings", embeddings)
    add_route(app, "GET", "/models", model_folders)
    add_route(app, "GET", "/models/{folder}", model_files)
    add_route(app, "GET", "/features", features)
    add_route(app, "GET", "/i18n", nothing_installed)
    add_route(app, "GET", "/global_subgraphs", nothing_installed)
