"""ComfyUI's information routes against what ComfyUI serves: node definitions (its recorded
/object_info), the machine (/system_stats's documented keys), model folders and front-end extensions."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.settings import Settings
from tests.api.conftest import HERE, LiveServer
from tests.comfy_fixtures import object_info as comfy_object_info

COMFY_NODE_KEYS = {
    "input",
    "input_order",
    "output",
    "output_is_list",
    "output_name",
    "name",
    "display_name",
    "description",
    "python_module",
    "category",
    "output_node",
}
"""What ComfyUI's /object_info gives every node, V1 and V3 alike."""
SAME_VALUE_KEYS = (
    "input_order",
    "output",
    "output_is_list",
    "output_name",
    "name",
    "output_node",
    "category",
)


@pytest.fixture
def info_server(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    models = tmp_path / "models"
    for name in (
        "embeddings/easy.safetensors",
        "embeddings/sub/deep.pt",
        "embeddings/notes.txt",
        "unet/u.sft",
    ):
        (models / name).parent.mkdir(parents=True, exist_ok=True)
        (models / name).write_bytes(b"")
    outside = tmp_path / "outside.js"
    outside.write_text("secret()")
    package = tmp_path / "nodes" / "info_web_nodes"
    for name in ("a.js", "sub/b.js", "style.css"):
        (package / "js" / name).parent.mkdir(parents=True, exist_ok=True)
        (package / "js" / name).write_text(f"/* {name} */")
    (package / "js" / "evil.js").symlink_to(outside)
    (package / "__init__.py").write_text('NODE_CLASS_MAPPINGS = {}\nWEB_DIRECTORY = "./js"\n')
    custom = (HERE / "custom_nodes", tmp_path / "nodes")
    with LiveServer(replace(settings, open_access=True, models_dir=models, custom_nodes_dirs=custom)) as live:
        yield live


def test_object_info_has_comfyuis_shape_for_the_nodes_both_have(server: LiveServer) -> None:
    comfy = comfy_object_info()
    with server.client() as client:
        ours = client.get("/object_info").json()
        assert client.get("/api/object_info").json() == ours
        shared = sorted(set(ours) & set(comfy))
        assert len(shared) >= 35
        for node in shared:
            assert set(ours[node]) >= COMFY_NODE_KEYS, node
            for key in SAME_VALUE_KEYS:
                assert ours[node][key] == comfy[node][key], (node, key)
        assert client.get("/object_info/KSampler").json() == {"KSampler": ours["KSampler"]}
        assert client.get("/api/object_info/NoSuchNode").json() == {}  # as ComfyUI: not a 404


def test_system_stats_has_comfyuis_keys(server: LiveServer) -> None:
    with server.client() as client:
        stats = client.get("/api/system_stats").json()
    system = stats["system"]
    assert {
        "os",
        "ram_total",
        "ram_free",
        "comfyui_version",
        "python_version",
        "pytorch_version",
        "embedded_python",
        "argv",
    } <= set(system)
    assert system["os"] == sys.platform and system["python_version"] == sys.version
    assert system["pytorch_version"] == torch.__version__
    assert (
        0
        < system["ram_free"]
        <= system["ram_total"]
        <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    )
    assert system["embedded_python"] is False and isinstance(system["argv"], list)
    [device] = stats["devices"]
    assert set(device) == {
        "name",
        "type",
        "index",
        "vram_total",
        "vram_free",
        "torch_vram_total",
        "torch_vram_free",
    }
    expected_type = "cuda" if torch.cuda.is_available() else "cpu"
    assert device["type"] == expected_type and device["name"].startswith(expected_type)
    assert 0 < device["vram_free"] <= device["vram_total"]
    assert 0 <= device["torch_vram_free"] <= device["torch_vram_total"]


def test_models_and_embeddings_list_the_model_folders(info_server: LiveServer) -> None:
    with info_server.client() as client:
        assert client.get("/embeddings").json() == ["easy", "sub/deep"]
        folders = client.get("/api/models").json()
        for name in ("checkpoints", "diffusion_models", "text_encoders", "vae", "loras", "embeddings"):
            assert name in folders  # ComfyUI's folder names (COMFY.md §5)
        assert client.get("/models/diffusion_models").json() == ["u.sft"]
        assert client.get("/models/unet").json() == ["u.sft"]  # the legacy name of the same folder
        assert client.get("/models/checkpoints").json() == []
        unknown = client.get("/models/nope")
        assert unknown.status_code == 404 and "unknown model folder" in unknown.json()["error"]


def test_extensions_list_and_serve_a_packages_web_directory(info_server: LiveServer) -> None:
    with info_server.client() as client:
        assert client.get("/extensions").json() == [
            "/extensions/engine/first_run.js",  # the project's own web/ folder
            "/extensions/engine/publish_endpoint.js",
            "/extensions/info_web_nodes/a.js",
            "/extensions/info_web_nodes/sub/b.js",
        ]
        script = client.get("/extensions/info_web_nodes/sub/b.js")
        assert script.text == "/* sub/b.js */"
        assert script.headers["content-type"].startswith("text/javascript")
        style = client.get("/extensions/info_web_nodes/style.css")
        assert style.headers["content-type"].startswith("text/css")
        evil = client.get("/extensions/info_web_nodes/evil.js")
        assert evil.status_code == 403 and "secret" not in evil.text
        assert client.get("/extensions/info_web_nodes/missing.js").status_code == 404
        assert client.get("/extensions/nobody/a.js").status_code == 404


def test_every_comfyui_route_here_needs_a_key_unless_open_access(
    keyed_server: tuple[LiveServer, str],
) -> None:
    server, secret = keyed_server
    paths = (
        "/object_info",
        "/api/system_stats",
        "/models",
        "/embeddings",
        "/features",
        "/extensions",
        "/view?filename=a.png",
        "/users",
        "/settings",
        "/userdata?dir=workflows",
        "/userdata/a.json",
    )
    with server.client() as anonymous:
        for path in paths:
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.post("/upload/image", files={"image": ("a.png", b"x")}).status_code == 401
        assert anonymous.post("/settings/a", json=1).status_code == 401
    with server.client(secret) as client:
        assert client.get("/object_info/KSampler").status_code == 200
        assert client.get("/settings").status_code == 200
