"""The official ComfyUI editor loads in a real browser (headless Debian chromium, driven by Playwright)
with nothing going wrong: no console error, no failed request, no error status, no request leaving
the server. The only failures let through are the 404s the editor expects from a server without
those features (reference COMFY.md §10), and only as 404s.

`make setup` installs chromium; Playwright is told to use it and downloads no browser of its own.
Each test writes a screenshot under tests/artifacts/ (git-ignored) and names it in the run's summary.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Response, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.api.conftest import LiveServer

pytestmark = pytest.mark.slow

CHROMIUM = "chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference"
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
    """Everything that went wrong in a page, as lines a person can read."""

    server: str
    found: list[str] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)

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
        if response.status >= 400 and not is_tolerated(response.url, response.status):
            self.found.append(f"{response.status} {response.request.method} {response.url}")

    def _failed(self, request: Request) -> None:
        if not is_tolerated(request.url, self.statuses.get(request.url)):
            self.found.append(f"failed {request.method} {request.url}: {request.failure}")

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if message.text.startswith("Failed to load resource") and is_tolerated(url, self.statuses.get(url)):
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
    finally:
        screenshot(page, "editor-signed-in", report)
        context.close()


FLUX_SCHNELL_WORKFLOW = REFERENCE / "comfy-examples" / "flux_schnell_example.workflow.json"
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
