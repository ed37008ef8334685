"""The official ComfyUI editor loads in a real browser (headless Debian chromium, driven by Playwright)
with nothing going wrong: no console error, no failed request, no error status, no request leaving
the server. The only failures let through are the 404s the editor expects from a server without
those features (reference COMFY.md §10), and only as 404s.

The project's editor extension "Publish as endpoint" (web/publish_endpoint.js) is driven as a user
drives it: a workflow loaded in the editor is published from its dialog, called through the Segmind SDK
and, as the shared file the editor opens, through comfy-sdk (Comfy API v2), then imported on a fresh
server. The same page checks that the example V3 node package (custom_nodes/example_v3) is in the
editor's node library.

`make setup` installs chromium; Playwright is told to use it and downloads no browser of its own.
Each test writes a screenshot under tests/artifacts/ (git-ignored) and names it in the run's summary.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import segmind
from comfy_sdk import Comfy
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, Request, Response, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from engine.settings import Settings
from tests.api.conftest import HERE, REPO, LiveServer
from tests.comfy_fixtures import input_spec

pytestmark = pytest.mark.slow

CHROMIUM = "chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
READY_SECONDS = 60
RUN_SECONDS = 240
TOLERATED_404 = ("/features", "/i18n", "/global_subgraphs", "/experiment/models", "/internal/folder_paths")
"""What the editor asks for and expects a 404 from when the server does not offer it (COMFY.md §10);
served under /api too."""
EDITOR_READY = "() => Boolean(window.app && window.app.canvas && window.graph)"
"""The editor has set up its canvas and graph (GraphView assigns window.app and window.graph then)."""
FIRST_RUN_GRAPH = "() => localStorage.getItem('engine.firstRunGraphShown') === '1'"


def chromium_path() -> str:
    path = shutil.which(CHROMIUM)
    if path is None:
        pytest.fail("chromium is not installed: `make setup` installs it (apt-get install chromium)")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        yield launched
        launched.close()


def is_tolerated(url: str, status: int | None) -> bool:
    path = urlsplit(url).path.removeprefix("/api")
    return status in (404, None) and any(path == p or path.startswith(p + "/") for p in TOLERATED_404)


@dataclass
class Problems:
    """Everything that went wrong in a page, as lines a person can read. `refusals` are the error
    statuses a test provokes on purpose, by path: those are let through, and only with that status."""

    server: str
    found: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    refusals: dict[str, set[int]] = field(default_factory=dict)

    def refused_on_purpose(self, url: str, status: int | None) -> bool:
        return status in self.refusals.get(urlsplit(url).path, set())

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.found.append(f"uncaught: {error}"))
        page.on("requestfailed", self._failed)
        page.on("response", self._response)
        page.on("request", self._request)

    def _request(self, request: Request) -> None:
        if not (request.url.startswith(self.server) or request.url.startswith(("data:", "blob:"))):
            self.found.append(f"request outside the server: {request.method} {request.url}")

    def _response(self, response: Response) -> None:
        self.statuses[response.url] = response.status
        if (
            response.status >= 400
            and not is_tolerated(response.url, response.status)
            and not self.refused_on_purpose(response.url, response.status)
        ):
            self.found.append(f"{response.status} {response.request.method} {response.url}")

    def _failed(self, request: Request) -> None:
        if not is_tolerated(request.url, self.statuses.get(request.url)):
            self.found.append(f"failed {request.method} {request.url}: {request.failure}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        status = self.statuses.get(url)
        if message.text.startswith("Failed to load resource") and (
            is_tolerated(url, status) or self.refused_on_purpose(url, status)
        ):
            return
        self.found.append(f"console error: {message.text[:500]} ({url})")


def screenshot(page: Page, name: str, report: Callable[[str], None]) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    report(f"editor screenshot: {path}")
    return path


def test_the_editor_loads_with_a_clean_console(
    server: LiveServer, browser: Browser, report: Callable[[str], None]
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems = Problems(server.url)
    problems.watch(page)
    try:
        response = page.goto(server.url + "/")
        assert response is not None and response.status == 200
        try:
            page.wait_for_function(EDITOR_READY, timeout=READY_SECONDS * 1000)
            page.wait_for_load_state("networkidle", timeout=READY_SECONDS * 1000)
        except PlaywrightTimeoutError:
            problems.found.append(f"the editor's graph was not ready within {READY_SECONDS} s")
        assert page.locator("canvas#graph-canvas").is_visible()
        # The first graph shown runs on this server's models (web/first_run.js replaced the editor's
        # default, whose model files no server of ours has): what the editor would queue succeeds.
        page.wait_for_function(FIRST_RUN_GRAPH, timeout=READY_SECONDS * 1000)
        prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    finally:
        screenshot(page, "editor-open-access", report)
        page.close()
    assert not problems.found, "what went wrong in the browser:\n" + "\n".join(problems.found)
    with httpx.Client(base_url=server.url) as client:
        prompt_id = client.post("/prompt", json={"prompt": prompt}).json()["prompt_id"]
        deadline = time.monotonic() + RUN_SECONDS
        while not (entry := client.get(f"/history/{prompt_id}").json()):
            assert time.monotonic() < deadline, f"the first-run graph did not finish in {RUN_SECONDS} s"
            time.sleep(0.2)
    assert entry[prompt_id]["status"]["status_str"] == "success", entry[prompt_id]["status"]


def test_a_keyed_server_asks_for_a_key_then_shows_the_editor(
    keyed_server: tuple[LiveServer, str], browser: Browser, report: Callable[[str], None]
) -> None:
    server, secret = keyed_server
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        page.goto(server.url + "/")
        assert page.url == server.url + "/login"
        page.fill("input[name=key]", "sk_not-a-key")
        page.click("button[type=submit]")
        assert "not valid" in page.locator("p.error").inner_text()
        screenshot(page, "login-wrong-key", report)
        assert page.url == server.url + "/login"
        assert context.cookies() == []

        page.fill("input[name=key]", secret)
        page.click("button[type=submit]")
        page.wait_for_url(server.url + "/")
        page.locator("canvas#graph-canvas").wait_for(timeout=READY_SECONDS * 1000)
        (cookie,) = context.cookies()
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/"

        # This key is not an admin's: "Publish as endpoint" shows the server's refusal, saying why.
        page.wait_for_function(FIRST_RUN_GRAPH, timeout=READY_SECONDS * 1000)
        dialog = open_dialog(page)
        dialog.locator("input[name=use]").first.check()
        dialog.locator("button[name=preview]").click()
        assert "is not an admin key" in dialog_message(dialog, "refused it (403)")
        screenshot(page, "publish-dialog-not-admin", report)
    finally:
        screenshot(page, "editor-signed-in", report)
        context.close()


FLUX_SCHNELL_WORKFLOW = HERE.parent / "diffusion" / "comfy_examples" / "flux_schnell_example.workflow.json"
"""ComfyUI's example, as the repository keeps it (a copy of shared/reference/comfy-examples' file)."""
EXAMPLE_SIZE = 256
"""The example asks for 1024x1024; a quarter of that keeps the run on a CPU short."""


def test_a_workflow_loaded_in_the_editor_runs_and_its_image_appears(
    server: LiveServer, browser: Browser, report: Callable[[str], None]
) -> None:
    workflow = json.loads(FLUX_SCHNELL_WORKFLOW.read_text())
    (latent,) = [node for node in workflow["nodes"] if node["type"] == "EmptyLatentImage"]
    latent["widgets_values"][:2] = [EXAMPLE_SIZE, EXAMPLE_SIZE]
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    # A returning browser: the first-run graph (web/first_run.js) must not replace the example loaded here.
    page.add_init_script("localStorage.setItem('engine.firstRunGraphShown', '1')")
    problems = Problems(server.url)
    problems.watch(page)
    messages: list[dict[str, Any]] = []

    def on_frame(payload: str | bytes) -> None:
        if isinstance(payload, str):
            messages.append(json.loads(payload))

    page.on("websocket", lambda socket: socket.on("framereceived", on_frame))
    try:
        page.goto(server.url + "/")
        page.wait_for_function(EDITOR_READY, timeout=READY_SECONDS * 1000)
        page.evaluate("workflow => window.app.loadGraphData(workflow)", workflow)
        page.get_by_role("button", name="Run", exact=True).click()
        deadline = time.monotonic() + RUN_SECONDS
        while not any(message["type"] in ("execution_success", "execution_error") for message in messages):
            assert time.monotonic() < deadline, f"no end of the run within {RUN_SECONDS} s: {messages[-3:]}"
            page.wait_for_timeout(100)
        kinds = [message["type"] for message in messages]
        assert "execution_error" not in kinds, [m for m in messages if m["type"] == "execution_error"]
        progress = [m["data"] for m in messages if m["type"] == "progress"]
        steps = [data["value"] for data in progress if data["node"] == "13"]
        assert steps == [1, 2, 3, 4]  # BasicScheduler's 4 steps, each reported over the websocket

        with httpx.Client(base_url=server.url) as client:
            (entry,) = client.get("/history", params={"max_items": 1}).json().values()
            (image,) = entry["outputs"]["9"]["images"]
            served = client.get("/view", params=image)
        assert served.status_code == 200 and Image.open(io.BytesIO(served.content)).size == (256, 256)
        # The editor shows it: it asks /view for the file and draws what it gets.
        shown = (
            "name => [...document.images].some(img => img.src.includes(name) && img.complete"
            " && img.naturalWidth > 0)"
        )
        page.wait_for_function(shown, arg=image["filename"], timeout=READY_SECONDS * 1000)
    finally:
        screenshot(page, "editor-ran-flux-schnell", report)
        page.close()
    assert not problems.found, "what went wrong in the browser:\n" + "\n".join(problems.found)


# -- "Publish as endpoint" (web/publish_endpoint.js) -------------------------------------------------------

PUBLISH_SIZE = 64
PUBLISH_DIALOG = "#engine-publish-dialog"
ADMIN = "/v1/admin/endpoints"
V3_NODES = {
    "ExampleV3ImageAdjust": "Image Adjust (example V3)",
    "ExampleV3TextJoin": "Text Join (example V3)",
}
"""The classes and display names custom_nodes/example_v3 declares (its define_schema)."""
FOX = {"prompt": "a red fox", "seed": 7}


def own_server_settings(settings: Settings, directory: Path, custom_nodes: tuple[Path, ...]) -> Settings:
    """An --open-access server (the operator on localhost is the admin) with graphs and data of its own."""
    graphs = directory / "graphs"
    shutil.copytree(REPO / "graphs", graphs)
    shutil.copytree(HERE / "graphs", graphs, dirs_exist_ok=True)
    return replace(
        settings,
        graphs_dir=graphs,
        data_dir=directory / "data",
        open_access=True,
        custom_nodes_dirs=settings.custom_nodes_dirs + custom_nodes,
    )


def small_flux_workflow() -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads(FLUX_SCHNELL_WORKFLOW.read_text())
    (latent,) = [node for node in workflow["nodes"] if node["type"] == "EmptyLatentImage"]
    latent["widgets_values"][:2] = [PUBLISH_SIZE, PUBLISH_SIZE]
    return workflow


def open_dialog(page: Page, command: str = "Publish as endpoint") -> Locator:
    """Through the editor's own menu, as a user finds it: Menu → Workflow → the command."""
    page.get_by_role("button", name="Menu", exact=True).click()
    page.get_by_role("menuitem", name="Workflow").hover()
    page.get_by_role("menuitem", name=command).click()
    dialog = page.locator(PUBLISH_DIALOG)
    dialog.wait_for(state="visible", timeout=READY_SECONDS * 1000)
    return dialog


def pick(dialog: Locator, node: str, widget: str, name: str, *, required: bool = False) -> None:
    row = dialog.locator(f'tr[data-node="{node}"][data-input="{widget}"]')
    row.locator("input[name=use]").check()
    row.locator("input[name=field-name]").fill(name)
    if required:
        row.locator("input[name=required]").check()


def dialog_message(dialog: Locator, wanted: str) -> str:
    message = dialog.locator(".engine-message")
    message.filter(has_text=wanted).wait_for(timeout=READY_SECONDS * 1000)
    return message.inner_text()


def pixels(data: bytes) -> tuple[tuple[int, int], bytes]:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    return image.size, image.tobytes()


def test_a_graph_published_from_the_editor_is_called_shared_and_imported(
    settings: Settings,
    browser: Browser,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    report: Callable[[str], None],
) -> None:
    v3_package = tmp_path / "v3-nodes"
    for package in ("example_v3", "example_text"):
        shutil.copytree(REPO / "custom_nodes" / package, v3_package / package)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.add_init_script("localStorage.setItem('engine.firstRunGraphShown', '1')")
    with LiveServer(own_server_settings(settings, tmp_path / "a", (v3_package,))) as server:
        problems = Problems(server.url, refusals={ADMIN: {400, 422}, f"{ADMIN}/import": {422}})
        problems.watch(page)
        try:
            page.goto(server.url + "/")
            page.wait_for_function(EDITOR_READY, timeout=READY_SECONDS * 1000)

            # Issue 11: the example V3 package's nodes are in the editor's node list under their names,
            # and the node library finds them.
            registered = page.evaluate(
                "names => Object.fromEntries(names.map(name => "
                "[name, LiteGraph.registered_node_types[name]?.nodeData?.display_name ?? null]))",
                list(V3_NODES),
            )
            assert registered == V3_NODES
            library = page.get_by_role("button", name="Node Library (n)")
            library.click()
            page.get_by_placeholder("Search Nodes...").fill("example V3")
            for display_name in V3_NODES.values():
                page.get_by_text(display_name).first.wait_for(timeout=READY_SECONDS * 1000)
            screenshot(page, "editor-node-library-v3", report)
            library.click()
            # the V1 example package's own script (its WEB_DIRECTORY) colours its node as it is created
            page.evaluate("() => { window.app.graph.add(LiteGraph.createNode('ExampleTextCase')) }")
            page.wait_for_function(
                "() => window.app.graph.findNodesByType('ExampleTextCase')[0]?.color === '#335'",
                timeout=READY_SECONDS * 1000,
            )

            page.evaluate("workflow => window.app.loadGraphData(workflow)", small_flux_workflow())
            dialog = open_dialog(page)
            dialog.locator("input[name=endpoint-name]").fill("fox")
            pick(dialog, "6", "text", "prompt", required=True)
            pick(dialog, "25", "noise_seed", "1seed")
            dialog.locator("button[name=preview]").click()
            # the server's own declaration check, shown as it worded it
            assert "'1seed' must be a name" in dialog_message(dialog, "refused")
            pick(dialog, "25", "noise_seed", "seed")
            with page.expect_response(lambda r: "dry_run=true" in r.url) as previewed:
                dialog.locator("button[name=preview]").click()
            assert previewed.value.status == 200
            schema = previewed.value.json()["endpoint"]["schema"]
            dialog.locator('.engine-schema tr[data-field="seed"]').wait_for()
            shown = {
                row.get_attribute("data-field"): row.inner_text()
                for row in dialog.locator(".engine-schema tbody tr").all()
            }
            screenshot(page, "publish-dialog-schema", report)
            # bounds and descriptions are ComfyUI's for those inputs (its recorded object_info)
            _, seed_options = input_spec("RandomNoise", "noise_seed")
            _, text_options = input_spec("CLIPTextEncode", "text")
            assert schema["required"] == ["prompt"] and set(schema["properties"]) == {"prompt", "seed"}
            assert schema["properties"]["seed"]["maximum"] == seed_options["max"]
            assert schema["properties"]["seed"]["minimum"] == seed_options["min"]
            assert schema["properties"]["prompt"]["description"] == text_options["tooltip"]
            assert set(shown) == {"prompt", "seed"} and "integer" in shown["seed"]
            # 2**64 - 1 is beyond a double's exact integers: the dialog shows the server's digits
            assert f"0 to {seed_options['max']}" in shown["seed"]
            shown_json = dialog.locator(".engine-schema-json").text_content() or ""
            assert json.loads(shown_json) == schema
            assert text_options["tooltip"] in shown["prompt"] and "yes" in shown["prompt"]
            assert not (server.settings.graphs_dir / "fox.json").exists()  # a preview publishes nothing

            dialog.locator("button[name=publish]").click()
            published = dialog_message(dialog, "Published fox")
            assert f"{server.url}/v1/fox" in published
            screenshot(page, "publish-dialog-published", report)
            dialog.locator("button[name=close]").click()
            editor = page.evaluate("async () => await window.app.graphToPrompt()")
            editor_prompt = editor["output"]

            # A model file this server lacks: the dialog says which.
            page.evaluate(
                "() => { const loader = app.graph.nodes.find(n => n.type === 'UNETLoader');"
                " loader.widgets.find(w => w.name === 'unet_name').value = 'flux1-huge.safetensors'; }"
            )
            dialog = open_dialog(page)
            dialog.locator("input[name=endpoint-name]").fill("fox-huge")
            pick(dialog, "6", "text", "prompt")
            dialog.locator("button[name=preview]").click()
            assert "flux1-huge.safetensors" in dialog_message(dialog, "refused")
            screenshot(page, "publish-dialog-missing-model", report)
            dialog.locator("button[name=close]").click()

            # The endpoint runs the graph the editor showed (the server converted the editor's workflow).
            template = json.loads((server.settings.graphs_dir / "fox.json").read_text())
            for node_id, node in template["prompt"].items():
                assert node["inputs"] == editor_prompt[node_id]["inputs"], node_id
            made = segmind.SegmindClient(api_key="unused", base_url=f"{server.url}/v1").run("fox", **FOX)
            segmind_image = pixels(httpx.get(made["output"]).content)
            assert segmind_image[0] == (PUBLISH_SIZE, PUBLISH_SIZE)

            with server.client() as client:
                exported = client.get(f"{ADMIN}/fox/export")
            assert exported.status_code == 200, exported.text
            shared = exported.json()
            assert shared["extra"]["engine_endpoint"]["fields"]["seed"]["sets"] == [["25", "noise_seed"]]
            # what is shared is the workflow as the user laid it out in the editor, notes and all
            assert [(n["id"], n["type"], n["pos"]) for n in shared["nodes"]] == [
                (n["id"], n["type"], n["pos"]) for n in editor["workflow"]["nodes"]
            ]

            # The shared file opens in the editor; what the editor makes of it runs through Comfy API v2
            # (comfy-sdk) with the request's values set, and makes the image the endpoint made.
            api_prompt = page.evaluate(
                "async file => { await window.app.loadGraphData(file);"
                " return (await window.app.graphToPrompt()).output; }",
                shared,
            )
            # Files this server cannot run, imported from the editor: refused, naming the node or file.
            unknown_node = copy.deepcopy(shared)
            sampler = next(n for n in unknown_node["nodes"] if n["type"] == "KSamplerSelect")
            sampler["type"] = "FancySamplerSelect"
            missing_model = copy.deepcopy(shared)
            loader = next(n for n in missing_model["nodes"] if n["type"] == "UNETLoader")
            loader["widgets_values"][0] = "flux1-huge.safetensors"
            for broken, named in (
                (unknown_node, "FancySamplerSelect"),
                (missing_model, "flux1-huge.safetensors"),
            ):
                path = tmp_path / f"{named}.json"
                path.write_text(json.dumps(broken))
                dialog = open_dialog(page, "Import endpoint file")
                dialog.locator("input[name=endpoint-file]").set_input_files(path)
                dialog.locator("input[name=endpoint-name]").fill("fox-2")
                dialog.locator("button[name=import]").click()
                assert named in dialog_message(dialog, "refused it (422)")
                screenshot(page, f"import-refused-{named}", report)
                dialog.locator("button[name=close]").click()
            # The shared file itself imports from the editor, under another name, checked first.
            path = tmp_path / "fox.json"
            path.write_text(exported.text)
            dialog = open_dialog(page, "Import endpoint file")
            dialog.locator("input[name=endpoint-file]").set_input_files(path)
            dialog.locator("input[name=endpoint-name]").fill("fox-copy")
            dialog.locator("button[name=check]").click()
            dialog_message(dialog, "the request schema fox-copy will have")
            dialog.locator("button[name=import]").click()
            dialog_message(dialog, "Imported fox-copy")
            screenshot(page, "import-dialog-imported", report)
            dialog.locator("button[name=close]").click()
            with server.client() as client:
                assert client.post("/v1/fox-2", json=FOX).status_code == 404
                listed = {e["id"]: e["schema"] for e in client.get("/v1/endpoints").json()["endpoints"]}
            assert listed["fox"] == schema
            assert listed["fox-copy"] == {**schema, "title": "fox (fox-copy) input"}  # titled by its name

            monkeypatch.setenv("COMFY_BASE_URL", server.url)
            monkeypatch.delenv("COMFY_API_KEY", raising=False)
            comfy = Comfy()
            workflow = comfy.workflows.from_json(api_prompt)
            workflow.set_input("6", "text", FOX["prompt"])
            workflow.set_input("25", "noise_seed", FOX["seed"])
            [output] = comfy.run(workflow).get_outputs("9")
            assert pixels(output.to_bytes()) == segmind_image
        finally:
            screenshot(page, "editor-after-publishing", report)
            page.close()
        assert not problems.found, "what went wrong in the browser:\n" + "\n".join(problems.found)

    # A fresh server imports the shared file and serves the same endpoint.
    with LiveServer(own_server_settings(settings, tmp_path / "b", ())) as fresh, fresh.client() as client:
        assert client.post("/v1/fox", json=FOX).status_code == 404
        imported = client.post(f"{ADMIN}/import", json=shared)
        assert imported.status_code == 201, imported.text
        assert imported.json()["endpoint"]["schema"] == schema
        made = segmind.SegmindClient(api_key="unused", base_url=f"{fresh.url}/v1").run("fox", **FOX)
        assert pixels(httpx.get(made["output"]).content) == segmind_image
