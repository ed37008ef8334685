"""`engine endpoints ...` as an operator runs it: in its own process, against a running server (which then
serves the endpoint without a restart), or with --offline on the graphs folder of a stopped one."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from engine.settings import Settings
from tests.api.conftest import HERE, REPO, LiveServer
from tests.api.test_publish import SOLID, own_graphs


def engine(*args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    environment.pop("ENGINE_API_KEY", None)
    if key is not None:
        environment["ENGINE_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "engine", "endpoints", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO,
        timeout=300,
    )


def size_and_color(data: bytes) -> tuple[tuple[int, int], tuple[int, ...]]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return image.size, image.getpixel((0, 0))


def test_publish_list_export_import_unpublish_against_a_running_server(
    settings: Settings, tmp_path: Path
) -> None:
    declaration = tmp_path / "green.json"
    declaration.write_text(json.dumps(SOLID))
    with LiveServer(replace(settings, graphs_dir=own_graphs(tmp_path / "graphs"))) as live:
        _, ordinary = live.service.keys.add_key("client", credits=10, rate_per_minute=600)
        _, admin = live.service.keys.add_key("ops", credits=10, rate_per_minute=600, admin=True)
        server = ("--server", live.url)

        refused = engine("publish", str(declaration), *server, key=ordinary)
        assert refused.returncode == 1 and "403" in refused.stderr and "admin" in refused.stderr

        published = engine("publish", str(declaration), "--name", "lime", *server, key=admin)
        assert published.returncode == 0, published.stderr
        assert f"POST {live.url}/v1/lime" in published.stdout
        made = live.client(ordinary).post("/v1/lime", json={"width": 3, "height": 5})
        assert size_and_color(made.content) == ((3, 5), (0, 255, 0))

        listed = engine("list", *server, key=ordinary)
        assert listed.returncode == 0 and "lime" in listed.stdout and "published" in listed.stdout

        shared = tmp_path / "lime.workflow.json"
        assert engine("export", "lime", "-o", str(shared), *server, key=admin).returncode == 0
        assert json.loads(shared.read_text())["extra"]["engine_endpoint"]["name"] == "lime"
        imported = engine("import", str(shared), "--name", "acme/lime", *server, key=admin)
        assert imported.returncode == 0, imported.stderr
        assert "segmind, fal" in imported.stdout
        made = live.client(ordinary).post("/run/acme/lime", json={"width": 2, "height": 2})
        assert made.status_code == 200

        again = engine("import", str(shared), "--name", "acme/lime", *server, key=admin)
        assert again.returncode == 1 and "replace" in again.stderr
        assert (
            engine("import", str(shared), "--name", "acme/lime", "--replace", *server, key=admin).returncode
            == 0
        )

        assert engine("unpublish", "lime", *server, key=admin).returncode == 0
        assert live.client(ordinary).post("/v1/lime", json={}).status_code == 404
        gone = engine("unpublish", "lime", *server, key=admin)
        assert gone.returncode == 1 and "404" in gone.stderr


@pytest.mark.slow  # each offline command loads the nodes (torch) and every template, as a server starts
def test_offline_publish_is_served_by_the_next_server(settings: Settings, tmp_path: Path) -> None:
    graphs = own_graphs(tmp_path / "graphs")
    declaration = tmp_path / "green.json"
    declaration.write_text(json.dumps(SOLID))
    offline = ("--offline", "--graphs", str(graphs), "--models-dir", str(settings.models_dir))
    offline += ("--custom-nodes", str(HERE / "custom_nodes"))
    published = engine("publish", str(declaration), *offline)
    assert published.returncode == 0, published.stderr
    assert "next start" in published.stdout and (graphs / "green.json").is_file()
    with LiveServer(replace(settings, graphs_dir=graphs, open_access=True)) as live:
        made = live.client().post("/v1/green", json={"width": 4, "height": 4})
        assert size_and_color(made.content) == ((4, 4), (0, 255, 0))
    clash = engine("publish", str(declaration), *offline)
    assert clash.returncode == 1 and "exists" in clash.stderr
