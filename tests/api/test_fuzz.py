"""Fuzzing the server against its own OpenAPI document: no 5xx, and every answer is one the document declares.

schemathesis reads `/openapi.json` from a real server and sends what it declares, and what it does not
(wrong types, out-of-range numbers, missing fields, odd content types), to every operation. No answer may
be a 5xx, and each one's status, content type, headers and body must be ones the document lists for that
operation. Each operation gets schemathesis' coverage cases (every bound, enum value and type violation,
one at a time) and then property-based cases, positive and negative.

Deterministic and bounded: the coverage cases are a fixed list, Hypothesis runs derandomized with no
example database, and `MAX_EXAMPLES` caps its cases per operation and mode, so the run takes a few
minutes on a 2-core CI machine and fails the same way every time. schemathesis' Python API drives it:
its lazy pytest loader (`schemathesis.pytest.from_fixture`) breaks on pytest 9.2 (`Function._nodeid`),
so each operation is a pytest subtest instead.

The server serves the cheap endpoints (solid colours behind Segmind's and fal's routes) so every route is
reached, requests run and their results are fetched. The model endpoints run for a minute a request on
random test weights, so their submissions are fuzzed on a server whose worker is stopped: what is checked
there is how their fields are parsed and refused, which needs no image.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engine.settings import Settings
from tests.api.conftest import HERE, REPO, LiveServer

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
MAX_EXAMPLES = 25
"""Hypothesis cases per operation (positive and negative mixed), on top of the coverage cases."""
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(params=[True, False], ids=["open", "keyed"])
def fuzz_server(request: pytest.FixtureRequest, settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    """The model-free endpoints, served with open access (`--open-access`) or requiring keys."""
    graphs = tmp_path / "fuzz-graphs"
    shutil.copytree(HERE / "fuzz_graphs", graphs)
    shutil.copy(REPO / "graphs" / "solid-color.json", graphs)
    fuzz_settings = replace(settings, graphs_dir=graphs, sync_timeout_seconds=60, open_access=request.param)
    with LiveServer(fuzz_settings) as live:
        yield live


@pytest.fixture
def idle_model_server(settings: Settings) -> Iterator[LiveServer]:
    """The repository's endpoints on random test weights, with nothing run: submissions stay queued."""
    with LiveServer(replace(settings, graphs_dir=REPO / "graphs", open_access=True)) as live:
        assert live.service.worker is not None
        live.call(live.service.worker.stop())
        yield live


def load_schema(server: LiveServer) -> schemathesis.BaseSchema:
    config = schemathesis.Config.from_dict(
        {"generation": {"with-security-parameters": False}, "request-timeout": 60}
    )
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)


WEBHOOKS = (("query", "webhook"), ("query", "fal_webhook"), ("headers", "x-webhook-url"))
CLOSED_PORT = "127.0.0.1:9"
"""The discard port: nothing listens, so a webhook sent there fails at once without leaving the machine."""


def keep_webhooks_local(case: schemathesis.Case) -> schemathesis.Case:
    """Made-up webhook URLs name real hosts: point the usable ones at a closed local port instead."""
    for location, name in WEBHOOKS:
        container = getattr(case, location)
        url = container.get(name) if container else None
        if not isinstance(url, str):
            continue
        try:
            parts = urlsplit(url)
        except ValueError:
            continue  # unusable as a URL: the server must refuse it, so it is sent as it is
        if parts.hostname:
            container[name] = urlunsplit(parts._replace(netloc=CLOSED_PORT))
    return case


def key_headers(operation: schemathesis.APIOperation, secret: str) -> dict[str, str]:
    """How each API's own clients send the key: Segmind's in x-api-key, fal's as `Authorization: Key`."""
    schemes = {name for requirement in operation.definition.raw.get("security", []) for name in requirement}
    if "falKey" in schemes:
        return {"Authorization": f"Key {secret}"}
    return {"x-api-key": secret}


def coverage_failures(
    schema: schemathesis.BaseSchema, operation: schemathesis.APIOperation, key: dict[str, str]
) -> list[str]:
    """Every coverage case is sent; each distinct failure is reported once, with the case that showed it."""
    distinct: dict[tuple[str, str], str] = {}
    for case in schema.iter_coverage_cases(
        operation, generation_modes=list(GenerationMode), generation_config=schema.config.generation
    ):
        try:
            keep_webhooks_local(case).call_and_validate(checks=CHECKS, headers=key)
        except FailureGroup as group:
            for failure in group.exceptions:
                distinct.setdefault((type(failure).__name__, failure.title), group.message)
    return list(distinct.values())


def finished_requests(server: LiveServer, secret: str | None) -> dict[str, list[str]]:
    """Requests that really ran, by API: the lookups are fuzzed with these ids too, not only made-up ones,
    so their 200 answers (result bodies, image files) are held to the document as well."""
    small = {"width": 8, "height": 8}
    with server.client(secret) as client:
        segmind = [
            client.post("/v1/solid-color", json=body).headers["x-request-id"]
            for body in (small, {**small, "batch": 2})
        ]
        fal = client.post("/fal-test/solid-color", json=small).json()["request_id"]
        while client.get(f"/fal-test/solid-color/requests/{fal}/status").status_code != 200:
            time.sleep(0.05)
    return {"segmind": segmind, "fal": [fal]}


def fuzz_failure(
    operation: schemathesis.APIOperation,
    auth: st.SearchStrategy[dict[str, str]],
    request_ids: list[str],
) -> str | None:
    """Hypothesis' cases, positive and negative: the first failure, shrunk to its simplest case."""
    path_choices: list[dict[str, object] | None] = [None]
    if "{request_id}" in operation.path:
        path_choices += [{"request_id": request_id} for request_id in request_ids]
    cases = st.one_of(
        [
            operation.as_strategy(generation_mode=mode, path_parameters=path)
            for mode in GenerationMode
            for path in path_choices
        ]
    )

    @FUZZ_SETTINGS
    @given(case=cases, headers=auth)
    def run(case: schemathesis.Case, headers: dict[str, str]) -> None:
        keep_webhooks_local(case).call_and_validate(checks=CHECKS, headers=headers)

    try:
        run()
    except FailureGroup as group:
        return "\n".join([group.message, *getattr(group, "__notes__", [])])
    return None


def fuzz_operation(
    schema: schemathesis.BaseSchema,
    operation: schemathesis.APIOperation,
    secret: str | None,
    requests: dict[str, list[str]],
) -> None:
    """Coverage cases with the key (if any), then fuzzed ones with the key, without it, or a wrong one."""
    key = key_headers(operation, secret) if secret else {}
    auth = st.sampled_from([key, {}, key_headers(operation, "not-a-key")]) if secret else st.just(key)
    segmind, fal = requests.get("segmind", []), requests.get("fal", [])
    if operation.path.startswith("/fal-test/"):
        request_ids = fal
    elif operation.path.startswith("/files/"):
        request_ids = [*segmind, *fal]
    else:
        request_ids = segmind
    failures = coverage_failures(schema, operation, key)
    fuzzed = fuzz_failure(operation, auth, request_ids)
    if fuzzed is not None:
        failures.append(fuzzed)
    assert not failures, "\n\n".join(failures)


def fuzz_every_operation(server: LiveServer, subtests: pytest.Subtests, secret: str | None) -> None:
    requests = finished_requests(server, secret)
    schema = load_schema(server)
    for result in schema.get_all_operations():
        operation = result.ok()
        with subtests.test(msg=operation.label):
            fuzz_operation(schema, operation, secret, requests)


def test_the_server_answers_only_as_documented(fuzz_server: LiveServer, subtests: pytest.Subtests) -> None:
    secret = None
    if not fuzz_server.service.settings.open_access:
        _, secret = fuzz_server.service.keys.add_key("fuzzer", credits=1e9, rate_per_minute=0)
    fuzz_every_operation(fuzz_server, subtests, secret)


def test_model_endpoint_submissions_answer_only_as_documented(
    idle_model_server: LiveServer, subtests: pytest.Subtests
) -> None:
    endpoints = idle_model_server.service.endpoints.values()
    queued = {
        f"/v2/{e.id}" if api == "segmind" else f"/{e.id}"
        for e in endpoints
        if e.id != "solid-color"
        for api in e.apis
    }
    schema = load_schema(idle_model_server)
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method == "post" and operation.path in queued:
            with subtests.test(msg=operation.label):
                fuzz_operation(schema, operation, None, {})
