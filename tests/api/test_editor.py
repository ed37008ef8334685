"""The ComfyUI editor, its workflow templates and node docs, served from their packages' own files."""

from __future__ import annotations

import http.client
import importlib.util
import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.api.conftest import LiveServer


def package_folder(package: str, folder: str) -> Path:
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / folder


FRONTEND = package_folder("comfyui_frontend_package", "static")
DOCS = package_folder("comfyui_embedded_docs", "docs")


def hashed_script() -> str:
    """The module script index.html loads (named by its content hash), read from the page itself."""
    html = (FRONTEND / "index.html").read_text()
    start = html.index('type="module" crossorigin src="./') + len('type="module" crossorigin src="./')
    return html[start : html.index('"', start)]


def raw_get(server: LiveServer, path: str) -> int:
    """The status of a GET sent with `path` exactly as written (httpx would resolve its dot segments)."""
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def test_the_editor_page_is_the_packages_index_and_is_revalidated(server: LiveServer) -> None:
    with server.client() as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.content == (FRONTEND / "index.html").read_bytes()
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]


def test_hashed_build_files_are_cached_for_a_year_and_others_revalidated(server: LiveServer) -> None:
    script = hashed_script()
    assert script.startswith("assets/index-")
    with server.client() as client:
        module = client.get(f"/{script}")
        icon = client.get("/assets/favicon.ico")
        logo = client.get("/assets/images/comfy-logo-wordmark.svg")  # copied as it is; "-wordmark" is no hash
        shim = client.get("/scripts/api.js")
        extension = client.get("/extensions/core/groupNode.js")
        font = client.get("/fonts/inter-latin-normal.woff2")
        stylesheet = client.get("/materialdesignicons.min.css")
    assert module.content == (FRONTEND / script).read_bytes()
    # a browser refuses a module script of any other type
    assert module.headers["content-type"] == "text/javascript; charset=utf-8"
    assert module.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert module.headers["x-content-type-options"] == "nosniff"
    assert icon.headers["cache-control"] == logo.headers["cache-control"] == "no-cache"
    assert logo.headers["content-type"] == "image/svg+xml"
    assert icon.content == (FRONTEND / "assets/favicon.ico").read_bytes()
    assert shim.headers["content-type"] == "text/javascript; charset=utf-8"
    assert extension.content == (FRONTEND / "extensions/core/groupNode.js").read_bytes()
    assert font.headers["content-type"] == "font/woff2"
    assert stylesheet.headers["content-type"] == "text/css; charset=utf-8"
    assert shim.headers["cache-control"] == font.headers["cache-control"] == "no-cache"


def test_a_revalidated_file_answers_304_when_unchanged(server: LiveServer) -> None:
    with server.client() as client:
        first = client.get("/scripts/api.js")
        again = client.get("/scripts/api.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_the_empty_user_stylesheet_the_page_links(server: LiveServer) -> None:
    assert 'href="user.css"' in (FRONTEND / "index.html").read_text()
    with server.client() as client:
        response = client.get("/user.css")
    assert response.status_code == 200 and response.text == ""
    assert response.headers["content-type"].startswith("text/css")


def test_workflow_templates_come_from_the_templates_packages(server: LiveServer) -> None:
    import comfyui_workflow_templates

    index_path = Path(comfyui_workflow_templates.get_asset_path("index", "index.json"))
    categories = json.loads(index_path.read_text())
    template = categories[0]["templates"][0]
    graph_path = Path(comfyui_workflow_templates.get_asset_path(template["name"], f"{template['name']}.json"))
    thumbnail = next(
        asset.filename
        for asset in comfyui_workflow_templates.get_template_entry(template["name"]).assets
        if asset.filename.endswith(".webp")
    )
    with server.client() as client:
        index = client.get("/templates/index.json")
        graph = client.get(f"/templates/{template['name']}.json")
        image = client.get(f"/templates/{thumbnail}")
    assert index.json() == categories
    assert graph.headers["content-type"] == "application/json"
    assert graph.content == graph_path.read_bytes()
    assert "nodes" in graph.json()  # a UI-format workflow the editor opens
    assert image.status_code == 200 and image.headers["content-type"] == "image/webp"
    assert image.content[:4] == b"RIFF" and image.content[8:12] == b"WEBP"


def test_node_documentation_with_its_images(server: LiveServer) -> None:
    with server.client() as client:
        markdown = client.get("/docs/KSampler/en.md")
        image = client.get("/docs/Load3D/asset/menu.webp")
        missing = client.get("/docs/NoSuchNode/en.md")
    assert markdown.status_code == 200
    assert markdown.headers["content-type"] == "text/markdown; charset=utf-8"
    assert markdown.content == (DOCS / "KSampler/en.md").read_bytes()
    assert image.content == (DOCS / "Load3D/asset/menu.webp").read_bytes()
    assert image.headers["content-type"] == "image/webp"
    assert missing.status_code == 404 and "NoSuchNode/en.md" in missing.json()["error"]


def test_the_api_documentation_keeps_its_docs_routes(server: LiveServer) -> None:
    """/docs is Swagger UI; its start-up script and assets share the /docs prefix with node docs."""
    with server.client() as client:
        page = client.get("/docs")
        script = client.get("/docs/reference.js")
        stylesheet = client.get("/docs/assets/swagger-ui.css")
    assert page.status_code == 200 and "swagger" in page.text.lower()
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    swagger_css = package_folder("swagger_ui", "static") / "swagger-ui.css"
    assert stylesheet.content == swagger_css.read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/assets/../../comfyui_frontend_package/__init__.py",
        "/assets/%2e%2e/%2e%2e/comfyui_frontend_package/__init__.py",
        "/assets/..%2F..%2Fcomfyui_frontend_package%2F__init__.py",
        "/assets/..%5C..%5Ccomfyui_frontend_package%5C__init__.py",
        "/scripts/%2Fetc%2Fpasswd",
        "/scripts//etc/passwd",
        "/scripts/api.js%00.png",
        "/templates/..%2F..%2Fcomfyui_workflow_templates_core%2Fmanifest.json",
        "/templates/%2e%2e",
        "/docs/KSampler/..%2F..%2F__init__.py",
        "/docs/%2e%2e/__init__.py",
        "/docs/KSampler/../../__init__.py",
        "/extensions/core/../../../__init__.py",
    ],
)
def test_no_request_path_reaches_a_file_outside_the_packages_folders(server: LiveServer, path: str) -> None:
    assert raw_get(server, path) in (400, 404)


def test_a_link_inside_the_static_folders_is_not_followed(tmp_path: Path) -> None:
    """The file table leaves links out (checked on a folder like the packages', made here)."""
    from engine.api.comfy.static_files import list_files

    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "real.js").write_text("1")
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "assets" / "link.js").symlink_to(tmp_path / "secret.txt")
    (tmp_path / "assets" / "linked-folder").symlink_to(tmp_path)
    assert set(list_files(tmp_path / "assets").files) == {"real.js"}
    assert set(list_files(tmp_path).files) == {"assets/real.js", "secret.txt"}


def test_the_editor_routes_take_only_get(server: LiveServer) -> None:
    with server.client() as client:
        response = client.post("/", content=b"")
    assert response.status_code == 405
