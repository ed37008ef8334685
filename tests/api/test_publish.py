"""Publishing endpoints through the admin routes, live, and sharing them as one editor workflow file.

Each server here has a graphs folder of its own (publishing writes into it). What is compared: the
images a published endpoint makes (their size and color, as the request asked), the Segmind SDK and
fal's routes calling it, the catalogue, OpenAPI and /docs listing it at once, and for a shared file the
editor's conversion of it (workflow.py) and the bytes a second, fresh server makes from it.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import segmind
from PIL import Image

from engine.graph.workflow import workflow_to_prompt
from engine.settings import Settings
from tests.api.conftest import HERE, REPO, LiveServer

SOLID_PROMPT = {
    "1": {
        "class_type": "EmptyImage",
        "inputs": {"width": 32, "height": 16, "batch_size": 1, "color": 0x00FF00},
        "_meta": {"title": "Canvas"},
    },
    "2": {"class_type": "SaveImage", "inputs": {"filename_prefix": "solid", "images": ["1", 0]}},
    "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
}
"""A workflow as the editor makes them: the image saved, and previewed (the preview is left out)."""

SOLID = {
    "name": "green",
    "title": "Green",
    "description": "A green rectangle.",
    "workflow": SOLID_PROMPT,
    "fields": {
        "width": {"input": ["1", "width"], "maximum": 256},
        "height": {"input": ["1", "height"], "maximum": 256},
        "color": {"input": ["1", "color"]},
    },
    "output": {"node": "2", "format": "png"},
}

FLUX = json.loads((REPO / "graphs" / "flux-schnell.json").read_text())["prompt"]
FLUX["27"]["inputs"].update(width=64, height=64)
FLUX["17"]["inputs"]["steps"] = 1
TINY_FLUX = {
    "name": "tiny-flux",
    "title": "Tiny Flux",
    "workflow": FLUX,
    "fields": {
        "prompt": {"input": ["6", "text"], "required": True, "max_tokens": 256, "tokenizer": "t5xxl"},
        "steps": {"input": ["17", "steps"], "maximum": 4},
        "seed": {"input": ["25", "noise_seed"]},
        "width": {"input": ["27", "width"], "maximum": 128},
        "height": {"input": ["27", "height"], "maximum": 128},
    },
    "output": {"node": "9", "format": "png"},
    "pricing": {"base": 0.001, "add": [{"field": "steps", "per_unit": 0.001}]},
}


def own_graphs(directory: Path) -> Path:
    """The repository's templates and the test ones, in a folder this server alone writes to."""
    shutil.copytree(REPO / "graphs", directory)
    shutil.copytree(HERE / "graphs", directory, dirs_exist_ok=True)
    return directory


@pytest.fixture
def publishing(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    """An --open-access server (the operator on localhost is the admin) with its own graphs folder."""
    graphs = own_graphs(tmp_path / "graphs")
    with LiveServer(replace(settings, graphs_dir=graphs, open_access=True)) as live:
        yield live


def pixel(data: bytes) -> tuple[tuple[int, int], tuple[int, ...]]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return image.size, image.getpixel((0, 0))


def ids(client: httpx.Client) -> list[str]:
    return [endpoint["id"] for endpoint in client.get("/v1/endpoints").json()["endpoints"]]


# -- publish, call, unpublish -------------------------------------------------------------------------------


def test_published_endpoint_serves_at_once_and_unpublishing_removes_it(publishing: LiveServer) -> None:
    client = publishing.client()
    response = client.post("/v1/admin/endpoints", json=SOLID)
    assert response.status_code == 201, response.text
    published = response.json()["endpoint"]
    assert published["urls"]["segmind"] == [f"{publishing.url}/v1/green", f"{publishing.url}/v2/green"]
    assert (publishing.settings.graphs_dir / "green.json").is_file()

    listing = {e["id"]: e for e in client.get("/v1/endpoints").json()["endpoints"]}
    assert listing["green"]["published"] and not listing["flux-schnell"]["published"]
    schema = listing["green"]["schema"]["properties"]
    bounds = {key: schema["width"].get(key) for key in ("type", "minimum", "maximum", "default")}
    assert bounds == {"type": "integer", "minimum": 1, "maximum": 256, "default": 32}  # EmptyImage's min
    assert "/v1/green" in client.get("/openapi.json").json()["paths"]
    assert 'id="green"' in client.get("/docs").text

    image = client.post("/v1/green", json={"width": 24, "color": 0xFF0000})
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert pixel(image.content) == ((24, 16), (255, 0, 0))
    sdk = segmind.SegmindClient(api_key="unused", base_url=f"{publishing.url}/v1")
    result = sdk.run("green", height=8, color=255)
    assert pixel(httpx.get(result["output"]).content) == ((32, 8), (0, 0, 255))
    too_wide = client.post("/v1/green", json={"width": 257})
    assert too_wide.status_code == 400 and too_wide.json()["errors"][0]["maximum"] == 256

    assert client.delete("/v1/admin/endpoints/green").json() == {"deleted": "green"}
    assert "green" not in ids(client)
    assert "/v1/green" not in client.get("/openapi.json").json()["paths"]
    assert client.post("/v1/green", json={}).status_code == 404
    assert not (publishing.settings.graphs_dir / "green.json").exists()


def test_owner_app_names_are_served_in_segmind_and_fal_style(publishing: LiveServer) -> None:
    client = publishing.client()
    assert client.post("/v1/admin/endpoints", json={**SOLID, "name": "acme/green"}).status_code == 201
    assert pixel(client.post("/v1/acme/green", json={"width": 8}).content) == ((8, 16), (0, 255, 0))
    ran = client.post("/run/acme/green", json={"height": 4})
    assert ran.status_code == 200, ran.text
    assert pixel(httpx.get(ran.json()["images"][0]["url"]).content) == ((32, 4), (0, 255, 0))
    # each style answers bad input in its own shape: Segmind's errors list, fal's FastAPI detail
    assert client.post("/v1/acme/green", json={"width": 0}).status_code == 400
    refused = client.post("/acme/green", json={"width": 0})
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "width"]
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/acme/green", "/v2/acme/green", "/acme/green", "/run/acme/green"} <= set(paths)
    assert client.delete("/v1/admin/endpoints/acme/green").status_code == 200
    assert not (publishing.settings.graphs_dir / "acme").exists()


def test_replacing_needs_replace_true_and_shipped_templates_are_not_touched(publishing: LiveServer) -> None:
    client = publishing.client()
    assert client.post("/v1/admin/endpoints", json=SOLID).status_code == 201
    again = client.post("/v1/admin/endpoints", json=SOLID)
    assert again.status_code == 409 and "replace" in again.json()["error"]
    narrower = copy.deepcopy(SOLID)
    narrower["fields"]["width"]["maximum"] = 40
    replaced = client.post("/v1/admin/endpoints", json={**narrower, "replace": True})
    assert replaced.status_code == 200 and replaced.json()["replaced"] is True
    assert client.post("/v1/green", json={"width": 41}).status_code == 400

    shipped = client.post("/v1/admin/endpoints", json={**SOLID, "name": "solid-color", "replace": True})
    assert shipped.status_code == 409 and "shipped" in shipped.json()["error"]
    assert client.delete("/v1/admin/endpoints/solid-color").status_code == 409
    assert client.delete("/v1/admin/endpoints/nothing-here").status_code == 404
    assert "solid-color" in ids(client)


# -- sharing as one file ------------------------------------------------------------------------------------


def test_export_then_import_on_a_fresh_server_makes_the_same_images(
    settings: Settings, tmp_path: Path
) -> None:
    request = {"prompt": "a red fox", "seed": 7}
    with LiveServer(
        replace(
            settings, graphs_dir=own_graphs(tmp_path / "a"), open_access=True, data_dir=tmp_path / "a-data"
        )
    ) as first:
        client = first.client()
        assert client.post("/v1/admin/endpoints", json=TINY_FLUX).status_code == 201
        made_here = client.post("/v1/tiny-flux", json=request)
        assert made_here.status_code == 200, made_here.text
        exported = client.get("/v1/admin/endpoints/tiny-flux/export")
        assert exported.status_code == 200
        assert "tiny-flux.json" in exported.headers["content-disposition"]
        shared = exported.json()
        template = json.loads((first.settings.graphs_dir / "tiny-flux.json").read_text())
        schema_here = client.get("/v1/endpoints").json()["endpoints"]
        registry = first.service.registry
        # the file is an editor workflow that the editor's conversion turns into the served graph
        assert workflow_to_prompt(shared, registry) == template["prompt"]
        declaration = shared["extra"]["engine_endpoint"]
        assert declaration["version"] == 1 and declaration["fields"]["seed"]["sets"] == [["25", "noise_seed"]]

    with LiveServer(
        replace(
            settings, graphs_dir=own_graphs(tmp_path / "b"), open_access=True, data_dir=tmp_path / "b-data"
        )
    ) as fresh:
        client = fresh.client()
        assert "tiny-flux" not in ids(client)
        imported = client.post("/v1/admin/endpoints/import", json=shared)
        assert imported.status_code == 201, imported.text
        made_there = client.post("/v1/tiny-flux", json=request)
        assert made_there.status_code == 200 and made_there.content == made_here.content
        assert made_there.headers["x-request-cost"] == made_here.headers["x-request-cost"] == "0.002"
        listed = {e["id"]: e["schema"] for e in client.get("/v1/endpoints").json()["endpoints"]}
        assert listed["tiny-flux"] == {e["id"]: e["schema"] for e in schema_here}["tiny-flux"]
        # sharing it again hands back the same file (the editor workflow is kept)
        assert client.get("/v1/admin/endpoints/tiny-flux/export").json() == shared
        renamed = client.post("/v1/admin/endpoints/import", params={"name": "me/flux"}, json=shared)
        assert renamed.status_code == 201 and renamed.json()["endpoint"]["apis"] == ["segmind", "fal"]


def test_a_file_this_server_cannot_run_is_refused_naming_what_is_missing(publishing: LiveServer) -> None:
    client = publishing.client()
    shared = client.get("/v1/admin/endpoints/flux-schnell/export").json()
    assert shared["extra"]["engine_endpoint"]["name"] == "flux-schnell"

    unknown_node = copy.deepcopy(shared)
    next(n for n in unknown_node["nodes"] if n["type"] == "KSamplerSelect")["type"] = "FancySamplerSelect"
    refused = client.post("/v1/admin/endpoints/import", params={"name": "x"}, json=unknown_node)
    assert refused.status_code == 422 and "FancySamplerSelect" in refused.json()["error"]

    missing_model = copy.deepcopy(shared)
    loader = next(n for n in missing_model["nodes"] if n["type"] == "UNETLoader")
    loader["widgets_values"][0] = "flux1-huge.safetensors"
    refused = client.post("/v1/admin/endpoints/import", params={"name": "x"}, json=missing_model)
    assert refused.status_code == 422 and "flux1-huge.safetensors" in refused.json()["error"]

    no_declaration = copy.deepcopy(shared)
    del no_declaration["extra"]["engine_endpoint"]
    refused = client.post("/v1/admin/endpoints/import", json=no_declaration)
    assert refused.status_code == 400 and "engine_endpoint" in refused.json()["error"]
    assert "x" not in ids(client)


# -- who may publish --------------------------------------------------------------------------------------


def test_only_admin_keys_manage_endpoints(settings: Settings, tmp_path: Path) -> None:
    with LiveServer(replace(settings, graphs_dir=own_graphs(tmp_path / "graphs"))) as live:
        _, client_secret = live.service.keys.add_key("client", credits=10, rate_per_minute=600)
        _, admin_secret = live.service.keys.add_key("ops", credits=0, rate_per_minute=600, admin=True)
        calls = [
            ("POST", "/v1/admin/endpoints", SOLID),
            ("POST", "/v1/admin/endpoints/import", {}),
            ("GET", "/v1/admin/endpoints/solid-color/export", None),
            ("DELETE", "/v1/admin/endpoints/solid-color", None),
        ]
        for method, path, body in calls:
            assert live.client().request(method, path, json=body).status_code == 401
            forbidden = live.client(client_secret).request(method, path, json=body)
            assert forbidden.status_code == 403 and "admin" in forbidden.json()["error"], path
        assert "green" not in ids(live.client(client_secret))
        admin = live.client(admin_secret)
        assert admin.post("/v1/admin/endpoints", json=SOLID).status_code == 201
        made = live.client(client_secret).post("/v1/green", json={"width": 2, "height": 2})
        assert pixel(made.content) == ((2, 2), (0, 255, 0))


# -- hostile input ------------------------------------------------------------------------------------------


def with_field(name: str, **spec: Any) -> dict[str, Any]:
    request = copy.deepcopy(TINY_FLUX)
    request["fields"][name] = spec
    return request


BAD_DECLARATIONS = {
    "a bound beyond the node's": (
        with_field("steps", input=["17", "steps"], maximum=20000),
        ["field 'steps'", "20000", "10000"],
    ),
    "an input the node lacks": (
        with_field("steps", input=["17", "stpes"]),
        ["field 'steps'", "stpes", "BasicScheduler"],
    ),
    "a linked input": (
        with_field("model", input=["17", "model"]),
        ["field 'model'", "17.model", "linked"],
    ),
    "a node the graph lacks": (with_field("steps", input=["99", "steps"]), ["field 'steps'", "no node 99"]),
    "a default outside its bounds": (
        with_field("steps", input=["17", "steps"], minimum=2),
        ["field 'steps'", "default 1"],
    ),
    "an enum value the combo lacks": (
        with_field("sampler", input=["16", "sampler_name"], enum=["euler", "warp_drive"]),
        ["field 'sampler'", "warp_drive"],
    ),
    "a malformed binding": (with_field("steps", input="17.steps"), ["field 'steps'", "input must be"]),
    "a field name that is not a name": (
        with_field("<script>", input=["17", "steps"]),
        ["fields", "<script>"],
    ),
    "an unknown key": ({**TINY_FLUX, "fieldz": {}}, ["unknown key", "fieldz"]),
    "no fields": ({**TINY_FLUX, "fields": {}}, ["fields"]),
    "no workflow": ({**TINY_FLUX, "workflow": []}, ["workflow"]),
    "a node without class_type": ({**TINY_FLUX, "workflow": {"1": {"inputs": {}}}}, ["workflow: node 1"]),
    "an output node that is not there": ({**TINY_FLUX, "output": {"node": "77"}}, ["output", "77"]),
    "a price on an unknown field": (
        {**TINY_FLUX, "pricing": {"add": [{"field": "nope", "per_unit": 1}]}},
        ["pricing", "nope"],
    ),
    "a reserved name": ({**TINY_FLUX, "name": "requests"}, ["'requests'", "other routes"]),
}


@pytest.mark.parametrize("case", BAD_DECLARATIONS, ids=list(BAD_DECLARATIONS))
def test_malformed_declarations_are_400_naming_the_field(publishing: LiveServer, case: str) -> None:
    request, named = BAD_DECLARATIONS[case]
    response = publishing.client().post("/v1/admin/endpoints", json=request)
    assert response.status_code == 400, response.text
    for part in named:
        assert part in response.json()["error"]
    assert not (publishing.settings.graphs_dir / "tiny-flux.json").exists()


@pytest.mark.parametrize(
    "name", ["../escape", "..", "a/../../b", ".hidden", "a/b/c", "a\\b", "", "x" * 101, "/abs", "a/"]
)
def test_names_that_are_not_safe_paths_are_refused(publishing: LiveServer, name: str) -> None:
    client = publishing.client()
    root = publishing.settings.graphs_dir
    before = sorted(root.parent.rglob("*"))
    response = client.post("/v1/admin/endpoints", json={**SOLID, "name": name})
    assert response.status_code == 400 and "name" in response.json()["error"], response.text
    imported = client.post("/v1/admin/endpoints/import", params={"name": name}, json={})
    assert imported.status_code == 400 and imported.json()["field"] == "name"
    assert sorted(root.parent.rglob("*")) == before  # nothing written, inside the folder or beside it


@pytest.mark.parametrize("path", ["/v1/admin/endpoints/..%2F..%2Fetc/export", "/v1/admin/endpoints/%2e%2e"])
def test_encoded_traversal_in_the_path_is_refused(publishing: LiveServer, path: str) -> None:
    method = "GET" if path.endswith("export") else "DELETE"
    response = publishing.client().request(method, path)
    assert response.status_code in (400, 404), response.text
    assert response.status_code == 404 or response.json()["field"] == "name"


@pytest.mark.parametrize(
    ("body", "status", "said"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b'{"name": NaN}', 400, "NaN"),
        (b'{"name": 1e999}', 400, "too large"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "deeply"),
        (b'{"name": "x", "n": ' + b"9" * 5000 + b"}", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
    ],
    ids=["not json", "nan", "huge float", "deep", "huge int", "array"],
)
def test_bodies_that_are_not_a_declaration(
    publishing: LiveServer, body: bytes, status: int, said: str
) -> None:
    response = publishing.client().post(
        "/v1/admin/endpoints", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status and said in response.json()["error"], response.text


def test_a_body_over_the_size_limit_is_413(publishing: LiveServer) -> None:
    huge = {**SOLID, "description": "x" * (publishing.settings.max_body_bytes + 1)}
    response = publishing.client().post("/v1/admin/endpoints", json=huge)
    assert response.status_code == 413 and "too large" in response.json()["error"]
    imported = publishing.client().post("/v1/admin/endpoints/import", json=huge)
    assert imported.status_code == 413


def test_a_graph_a_thousand_links_deep_publishes_and_exports(publishing: LiveServer) -> None:
    """No step recurses along the links: a long chain is neither a 500 nor a stalled server."""
    depth = 1000
    prompt: dict[str, Any] = {"0": {"class_type": "PrimitiveInt", "inputs": {"value": 6}}}
    for index in range(1, depth):
        prompt[str(index)] = {"class_type": "PrimitiveInt", "inputs": {"value": [str(index - 1), 0]}}
    prompt["a"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": [str(depth - 1), 0], "height": 4, "batch_size": 1, "color": 0xFFFFFF},
    }
    prompt["b"] = {"class_type": "SaveImage", "inputs": {"filename_prefix": "deep", "images": ["a", 0]}}
    request = {
        "name": "deep",
        "workflow": prompt,
        "fields": {"width": {"input": ["0", "value"], "maximum": 64}},
    }
    client = publishing.client()
    assert client.post("/v1/admin/endpoints", json=request).status_code == 201
    assert pixel(client.post("/v1/deep", json={"width": 5}).content) == ((5, 4), (255, 255, 255))
    shared = client.get("/v1/admin/endpoints/deep/export").json()
    assert len(shared["nodes"]) == depth + 2
    back = workflow_to_prompt(shared, publishing.service.registry)  # ids renumbered 1.. in the prompt's order
    assert back[str(depth + 1)]["inputs"]["width"] == [str(depth), 0] and back["2"]["inputs"]["value"] == [
        "1",
        0,
    ]
    assert shared["extra"]["engine_endpoint"]["fields"]["width"]["sets"] == [["1", "value"]]
