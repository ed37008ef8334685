"""/docs against a real server: the interactive reference loads from the server itself, the guide's
curl lines call this server and work when run, and the asset route serves its files and nothing else."""

from __future__ import annotations

import http.client
import importlib.util
import re
import shlex
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from engine.settings import Settings
from tests.api.conftest import LiveServer


class _Page(HTMLParser):
    """What a browser would fetch for the page: scripts, stylesheets, the Swagger UI root; and the <pre>s."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.inline_scripts = 0
        self.stylesheets: list[str] = []
        self.openapi_url: str | None = None
        self.pre: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            if attributes.get("src"):
                self.scripts.append(str(attributes["src"]))
            self._in = "script"
        elif tag == "link" and attributes.get("rel") == "stylesheet":
            self.stylesheets.append(str(attributes["href"]))
        elif attributes.get("id") == "swagger-ui":
            self.openapi_url = attributes.get("data-openapi-url")
        elif tag == "pre":
            self._in = "pre"
            self.pre.append("")

    def handle_data(self, data: str) -> None:
        if self._in == "script" and data.strip():
            self.inline_scripts += 1
        elif self._in == "pre":
            self.pre[-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "pre"):
            self._in = None


def _page(client: httpx.Client) -> tuple[httpx.Response, _Page]:
    response = client.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = _Page()
    page.feed(response.text)
    return response, page


def _package_file(name: str) -> bytes:
    spec = importlib.util.find_spec("swagger_ui")
    assert spec is not None and spec.submodule_search_locations
    return (Path(next(iter(spec.submodule_search_locations))) / "static" / name).read_bytes()


def test_docs_loads_swagger_ui_from_this_server_without_a_key(keyed_server: tuple[LiveServer, str]) -> None:
    server, _ = keyed_server
    with server.client() as client:
        response, page = _page(client)
        origin = urlsplit(server.url).netloc
        urls = [urljoin(str(response.url), url) for url in (*page.scripts, *page.stylesheets)]
        assert page.inline_scripts == 0  # the CSP below allows none
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert all(urlsplit(url).netloc == origin for url in urls), urls
        fetched = {urlsplit(url).path.rsplit("/", 1)[-1]: client.get(url) for url in urls}
        assert {name: r.status_code for name, r in fetched.items()} == dict.fromkeys(fetched, 200)
        bundle, css = fetched["swagger-ui-bundle.js"], fetched["swagger-ui.css"]
        assert bundle.headers["content-type"].startswith("text/javascript")
        assert css.headers["content-type"].startswith("text/css")
        assert bundle.content == _package_file("swagger-ui-bundle.js")  # the package's own file, whole
        assert css.content == _package_file("swagger-ui.css")
        starter = fetched["reference.js"]
        assert starter.headers["content-type"].startswith("text/javascript")
        assert "SwaggerUIBundle(" in starter.text and "dataset.openapiUrl" in starter.text
        licence = client.get(urljoin(str(response.url), "docs/assets/LICENSE"))
        assert 'href="docs/assets/LICENSE"' in response.text and "Apache License" in licence.text
        assert page.openapi_url is not None
        document = client.get(urljoin(str(response.url), page.openapi_url))
        assert document.status_code == 200 and document.json()["openapi"].startswith("3.1")
        assert document.json()["servers"] == [{"url": server.url}]


def _curls(pre: str) -> list[list[str]]:
    """Each curl command of a <pre>, as the shell would split it ($ID and $API_KEY left as written)."""
    text = re.sub(r"\\\n", " ", pre)
    lines = [line.split("   # ")[0] for line in text.splitlines() if line.startswith("curl ")]
    return [shlex.split(line) for line in lines]


def _send(client: httpx.Client, argv: list[str], request_id: str = "") -> httpx.Response:
    method, url, headers, body = "GET", "", {}, None
    words = iter(argv[1:])
    for word in words:
        if word == "-X":
            method = next(words)
        elif word == "-H":
            name, _, value = next(words).partition(": ")
            headers[name] = value
        elif word == "-d":
            body = next(words)
        elif word in ("-o", "--output"):
            next(words)
        elif not word.startswith("-"):
            url = word
    assert url, argv
    url = url.replace("$ID", request_id)
    headers = {name: value for name, value in headers.items() if "$API_KEY" not in value}
    return client.request(method, url, headers=headers, content=body)


def _documented(document: dict[str, Any], server_url: str, argv: list[str]) -> bool:
    """The command's method and path are an operation of the server's OpenAPI document.

    fal's run host (/run/<app>) takes the queue host's paths, which alone the document lists."""
    method = argv[argv.index("-X") + 1].lower() if "-X" in argv else "get"
    url = next(word for word in argv if word.startswith(server_url + "/"))
    path = urlsplit(url.replace("$ID", "x")).path.removeprefix(urlsplit(server_url).path)
    path = path.removeprefix("/run") if path.startswith("/run/") else path
    for template, operations in document["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path) and method in operations:
            return True
    return False


def test_the_guide_calls_this_server_and_its_lines_work(server: LiveServer) -> None:
    with server.client() as client:
        response, page = _page(client)
        assert "localhost:8000" not in response.text
        document = client.get("/openapi.json").json()
        segmind, fal = (_curls(pre) for pre in page.pre[:2])
        assert len(segmind) == 7 and len(fal) == 6
        for argv in (*segmind, *fal):
            assert _documented(document, server.url, argv), argv
        submit, status, events, result, _, cancel, _ = segmind
        queued = _send(client, submit)
        assert queued.status_code == 200, queued.text
        request_id = queued.json()["request_id"]
        assert queued.headers["x-request-id"] == request_id and "x-request-cost" in queued.headers
        assert _send(client, submit).headers["Idempotent-Replayed"] == "true"
        assert _send(client, status, request_id).json()["status"] in ("QUEUED", "PROCESSING")
        assert _send(client, cancel, request_id).json()["cancel_requested"] is True
        stream = _send(client, events, request_id)  # ends once the job has
        assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
        assert _send(client, result, request_id).json()["status"] == "FAILED"  # cancelled, as Segmind says
        assert _send(client, cancel, request_id).status_code == 409  # finished already


def test_behind_a_proxy_the_guide_calls_the_public_url_and_the_page_loads_relatively(
    settings: Settings,
) -> None:
    public_url = "https://images.example.test/api"
    with (
        LiveServer(replace(settings, open_access=True, public_url=public_url)) as server,
        server.client() as client,
    ):
        response, page = _page(client)
        commands = [argv for pre in page.pre[:2] for argv in _curls(pre)]
        assert commands and all(any(w.startswith(public_url + "/") for w in argv) for argv in commands)
        assert server.url not in "".join(page.pre)
        assert public_url in response.headers["content-security-policy"]  # try it out calls it
        for url in (*page.scripts, *page.stylesheets):  # from the address the browser used
            assert client.get(urljoin(str(response.url), url)).status_code == 200, url


TRAVERSALS = (
    "/docs/assets/../../etc/passwd",
    "/docs/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/docs/assets/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/docs/assets/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/docs/assets/..%5c..%5c..%5cetc%5cpasswd",
    "/docs/assets/%252e%252e%252fetc%252fpasswd",
    "/docs/assets/%2Fetc%2Fpasswd",
    "/docs/assets/..%2F__init__.py",  # the package's own code, one folder up
    "/docs/assets/swagger-editor-bundle.js",  # beside the served files, but not one of them
    "/docs/assets/",
)


def test_the_asset_route_serves_its_files_and_nothing_else(server: LiveServer) -> None:
    """Sent byte for byte (http.client does not tidy `..` away as httpx and browsers do)."""
    address = urlsplit(server.url)
    connection = http.client.HTTPConnection(address.hostname or "", address.port)
    try:
        connection.request("GET", "/docs/assets/swagger-ui.css")
        served = connection.getresponse()
        assert (served.status, served.read()) == (200, _package_file("swagger-ui.css"))
        for path in TRAVERSALS:
            connection.request("GET", path)
            answer = connection.getresponse()
            body = answer.read()
            assert answer.status == 404, (path, answer.status)
            assert b"root:" not in body and b"import" not in body, path
    finally:
        connection.close()
