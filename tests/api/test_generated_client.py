"""A client generated from the server's own /openapi.json by openapi-python-client calls every route.

The generator is a real, widely used consumer of OpenAPI documents: it drops any schema it cannot read
(with every response that refers to it), picks a request body's encoding by the body's class, and
parses each response by the schema declared for its status. So the document is right for it when the
generation gives no warning, every generated module imports, and each call's parsed response is the
answer the server sent: the status, and the model's fields equal to the JSON body (`to_dict()`).

The generator reads JSON, text and application/octet-stream bodies only; images are read as bytes by
mapping their media types to octet-stream with its documented `content_type_overrides` setting.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from PIL import Image

from engine.settings import Settings
from tests.api.conftest import HERE, LiveServer

PACKAGE = "generated_engine_client"
GENERATOR_CONFIG = """\
post_hooks: []
content_type_overrides:
  image/png: application/octet-stream
  image/jpeg: application/octet-stream
  image/webp: application/octet-stream
"""
RED = 0xFF0000


@pytest.fixture(scope="session")
def generated_clients() -> dict[str, Path]:
    """Generated packages by document (less its server URL): a document is generated once a session."""
    return {}


@pytest.fixture
def client_server(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    """The repository's endpoints, the test ones (slow) and the fal-style solid colour: open access."""
    graphs = tmp_path / "client-graphs"
    shutil.copytree(settings.graphs_dir, graphs)
    shutil.copytree(HERE / "fuzz_graphs", graphs, dirs_exist_ok=True)
    with LiveServer(replace(settings, graphs_dir=graphs, open_access=True)) as live:
        yield live


def generate(document: dict[str, Any], cache: dict[str, Path], factory: pytest.TempPathFactory) -> Path:
    """The folder holding the package `openapi-python-client generate` makes of the document."""
    key = hashlib.sha256(json.dumps({**document, "servers": []}, sort_keys=True).encode()).hexdigest()
    if key not in cache:
        directory = factory.mktemp("generated-client")
        (directory / "openapi.json").write_text(json.dumps(document))
        (directory / "config.yaml").write_text(GENERATOR_CONFIG)
        command = [sys.executable, "-m", "openapi_python_client", "generate", "--meta", "none"]
        command += ["--path", "openapi.json", "--config", "config.yaml", "--output-path", PACKAGE]
        run = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=300)
        output = run.stdout + run.stderr
        assert run.returncode == 0, output
        assert "warning" not in output.lower(), output  # each warning is a schema or response dropped
        cache[key] = directory
    return cache[key]


class Generated:
    """The client generated from a server's document: its modules, and a client of that server."""

    def __init__(self, server: LiveServer, folder: Path) -> None:
        self.folder = folder / PACKAGE
        self.models = self.module("models")
        client = self.module("client").Client(base_url=server.url, raise_on_unexpected_status=True)
        self.client = client.with_timeout(httpx.Timeout(120))

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.{name}")

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call operation `name` (its module under api/) with the generated client's `sync_detailed`."""
        return self.module(f"api.{name}").sync_detailed(*args, client=self.client, **kwargs)


def generated_for(
    server: LiveServer,
    cache: dict[str, Path],
    factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Generated:
    with server.client() as http:
        document = http.get("/openapi.json").json()
    folder = generate(document, cache, factory)
    monkeypatch.syspath_prepend(str(folder))
    for name in [module for module in sys.modules if module.split(".")[0] == PACKAGE]:
        del sys.modules[name]  # another document's package, imported by an earlier test
    return Generated(server, folder)


@pytest.fixture
def generated(
    client_server: LiveServer,
    generated_clients: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> Generated:
    return generated_for(client_server, generated_clients, tmp_path_factory, monkeypatch)


def answered(response: Any, status: int, model: type) -> Any:
    """The parsed response, once checked to be the server's answer: its status and all its JSON fields."""
    assert response.status_code == status, response.content
    assert isinstance(response.parsed, model), response.parsed
    assert response.parsed.to_dict() == json.loads(response.content)
    return response.parsed


def text(response: Any) -> str:
    """A text body (a stream, HTML, metrics), once checked to be what the server sent."""
    assert response.status_code == 200, response.content
    assert response.parsed == response.content.decode()
    return response.parsed


def image(response: Any) -> tuple[int, int, str, tuple[int, ...]]:
    """Size, format and first pixel of image bytes, once checked to be what the server sent."""
    assert response.status_code == 200, response.content
    assert response.parsed == response.content
    with Image.open(io.BytesIO(response.parsed)) as decoded:
        return (*decoded.size, decoded.format or "", decoded.convert("RGB").getpixel((0, 0)))


def busy(generated: Generated) -> None:
    """Keeps the only worker busy for two seconds: what is submitted next waits in the queue."""
    submitted = generated.call("slow.slow_v2", body=generated.models.SlowSlowInput(seconds=2))
    answered(submitted, 200, generated.models.SegmindSubmitted)


def test_every_module_of_the_generated_client_imports(generated: Generated) -> None:
    names = [
        ".".join(path.relative_to(generated.folder).with_suffix("").parts).removesuffix(".__init__")
        for path in generated.folder.rglob("*.py")
    ]
    for name in names:
        if name != "__init__":
            generated.module(name)
    assert {"api.solid_color.solid_color_v1", "api.fal_testsolid_color.fal_test_solid_color_status"} <= set(
        names
    )


def test_the_segmind_queue_through_the_generated_client(generated: Generated) -> None:
    models, call = generated.models, generated.call
    busy(generated)
    job = call("solid_color.solid_color_v2", body=models.SolidColorSolidColorInput(width=8, color=RED))
    job = answered(job, 200, models.SegmindSubmitted)
    pending = answered(call("v2_queue.segmind_result", job.request_id), 202, models.SegmindResult)
    assert pending.status == models.SegmindResultStatus.QUEUED
    waiting = answered(call("v2_queue.segmind_status", job.request_id), 200, models.SegmindStatus)
    assert waiting.status == models.SegmindStatusStatus.QUEUED
    dropped = call("solid_color.solid_color_v2", body=models.SolidColorV2DataBody(width=8))
    dropped = answered(dropped, 200, models.SegmindSubmitted)
    cancel = answered(call("v2_queue.segmind_cancel", dropped.request_id), 200, models.SegmindCancelled)
    assert cancel.cancel_requested is True

    events = text(call("v2_queue.segmind_events", job.request_id))
    assert "event: status" in events and '"COMPLETED"' in events
    result = answered(call("v2_queue.segmind_result", job.request_id), 200, models.SegmindResult)
    assert result.status == models.SegmindResultStatus.COMPLETED and result.images[0].width == 8
    assert image(call("files.files_get", job.request_id, 0)) == (8, 512, "PNG", (255, 0, 0))
    late = answered(call("v2_queue.segmind_cancel", job.request_id), 409, models.Error)
    assert late.status == models.ErrorStatus.COMPLETED
    failed = answered(call("v2_queue.segmind_status", dropped.request_id), 422, models.SegmindStatus)
    assert failed.status == models.SegmindStatusStatus.FAILED
    assert answered(call("v2_queue.segmind_status", "no-such-request"), 404, models.Error).error
    refused = call("solid_color.solid_color_v2", body=models.SolidColorV2FilesBody(width=0))
    refused = answered(refused, 400, models.Error)
    assert [(error.field, error.code) for error in refused.errors] == [("width", models.FieldErrorCode.RANGE)]


def test_the_fal_queue_through_the_generated_client(generated: Generated) -> None:
    models, call = generated.models, generated.call
    app = "fal_testsolid_color.fal_test_solid_color_"
    busy(generated)
    job = call(app + "submit", body=models.SolidColorInput(width=8, height=8, color=RED))
    job = answered(job, 200, models.FalSubmitted)
    queued = answered(call(app + "status", job.request_id), 202, models.FalStatus)
    assert queued.status == models.FalStatusStatus.IN_QUEUE and queued.queue_position == 0
    dropped = answered(
        call(app + "submit", body=models.FalTestSolidColorSubmitFilesBody()), 200, models.FalSubmitted
    )
    cancel = answered(call(app + "cancel", dropped.request_id), 202, models.FalCancel)
    assert cancel.status == models.FalCancelStatus.CANCELLATION_REQUESTED

    assert '"COMPLETED"' in text(call(app + "status_stream", job.request_id))
    done = answered(call(app + "status", job.request_id), 200, models.FalStatus)
    assert done.status == models.FalStatusStatus.COMPLETED
    output = answered(call(app + "result", job.request_id), 200, models.FalTestSolidColorOutput)
    assert (output.images[0].width, output.images[0].height) == (8, 8)
    no_output = answered(call(app + "result", dropped.request_id), 400, models.FalNoResult)
    assert no_output.detail == "Request was cancelled"
    again = answered(call(app + "cancel", job.request_id), 400, models.FalCancel)
    assert again.status == models.FalCancelStatus.ALREADY_COMPLETED
    invalid = call(app + "submit", body=models.FalTestSolidColorSubmitDataBody(width=0))
    assert answered(invalid, 422, models.FalValidationError).detail[0].loc == ["body", "width"]


def test_the_sync_route_answers_image_bytes_for_each_body_encoding(generated: Generated) -> None:
    models = generated.models
    for body in (models.SolidColorSolidColorInput, models.SolidColorV1FilesBody, models.SolidColorV1DataBody):
        answer = generated.call("solid_color.solid_color_v1", body=body(width=4, height=6, color=RED))
        assert image(answer) == (4, 6, "PNG", (255, 0, 0))


def test_the_service_routes_through_the_generated_client(generated: Generated) -> None:
    models, call = generated.models, generated.call
    assert answered(call("service.service_health"), 200, models.Health).status == models.HealthStatus.OK
    assert answered(call("service.service_ready"), 200, models.Readiness).ready is True
    assert "# TYPE" in text(call("service.service_metrics"))
    catalogue = answered(call("service.service_endpoints"), 200, models.EndpointList)
    assert {"solid-color", "fal-test/solid-color"} <= {endpoint.id for endpoint in catalogue.endpoints}
    document = answered(call("service.service_openapi"), 200, models.ServiceOpenapiResponse200)
    assert document["openapi"] == "3.1.0"
    assert "<html" in text(call("service.service_docs")).lower()


def test_the_generated_client_sends_either_key_header(
    keyed_server: tuple[LiveServer, str],
    generated_clients: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, secret = keyed_server
    generated = generated_for(server, generated_clients, tmp_path_factory, monkeypatch)
    models, client = generated.models, generated.module("client")
    body = models.SolidColorSolidColorInput(width=8)
    refused = generated.call("solid_color.solid_color_v2", body=body)
    assert "key" in answered(refused, 401, models.Error).error.lower()
    submit = generated.module("api.solid_color.solid_color_v2")
    for header, prefix in (("x-api-key", ""), ("Authorization", "Key")):
        keyed = client.AuthenticatedClient(server.url, token=secret, prefix=prefix, auth_header_name=header)
        answered(submit.sync_detailed(client=keyed, body=body), 200, models.SegmindSubmitted)


def test_fals_run_route_through_the_generated_client(generated: Generated) -> None:
    models, call = generated.models, generated.call
    run = "fal_testsolid_color.fal_test_solid_color_run"
    output = answered(
        call(run, body=models.SolidColorInput(width=8, height=4)), 200, models.FalTestSolidColorOutput
    )
    assert (output.images[0].width, output.images[0].height) == (8, 4)
    invalid = call(run, body=models.SolidColorInput(width=0))
    assert answered(invalid, 422, models.FalValidationError).detail[0].loc == ["body", "width"]
