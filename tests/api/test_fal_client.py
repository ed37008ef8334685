"""fal's own Python client (PyPI `fal-client`), unmodified, against a real server over HTTPS.

The client is configured only as the README says (FAL_RUN_HOST, FAL_QUEUE_RUN_HOST, FAL_KEY, and
SSL_CERT_FILE to trust the test CA) and runs in a subprocess, because it reads its hosts from the
environment once, at import. The certificate chain is made here: a CA, and a server certificate it
signs for 127.0.0.1.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import httpx_sse
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.settings import Settings
from tests.api.conftest import REPO, LiveServer

APP = "fal-ai/aura-flow"
REQUEST = {"prompt": "an iguana", "num_inference_steps": 2, "seed": 7}


@dataclass(frozen=True)
class Chain:
    ca: Path
    cert: Path
    key: Path


def _pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def make_chain(directory: Path) -> Chain:
    """A test CA and a server certificate it signs for IP 127.0.0.1, valid for a day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "engine test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Chain(
        ca=_pem(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM)),
        cert=_pem(directory / "server.pem", cert.public_bytes(serialization.Encoding.PEM)),
        key=_pem(
            directory / "server-key.pem",
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
        ),
    )


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    return make_chain(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server(settings: Settings, chain: Chain) -> Iterator[tuple[LiveServer, str]]:
    """An HTTPS server that requires keys, and the secret of one."""
    with LiveServer(replace(settings, tls_cert=chain.cert, tls_key=chain.key)) as live:
        _, secret = live.service.keys.add_key("fal-client", credits=100, rate_per_minute=600)
        yield live, secret


def run_fal_client(server: LiveServer, secret: str, chain: Chain, script: str) -> Any:
    """Runs `script` with `fal_client` imported and configured as the README says (BASE and AUTH let
    it make plain requests too); the script prints its findings as JSON."""
    host = server.url.removeprefix("https://")
    env = {
        **os.environ,
        "FAL_KEY": secret,
        "FAL_RUN_HOST": f"{host}/run",
        "FAL_QUEUE_RUN_HOST": host,
        "SSL_CERT_FILE": str(chain.ca),
        "PYTHONPATH": str(REPO),
    }
    prelude = (
        f"import json, httpx, fal_client\nAPP = {APP!r}\nREQUEST = {REQUEST!r}\n"
        f"BASE = {server.url!r}\nAUTH = {{'Authorization': 'Key {secret}'}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def https(server: LiveServer, secret: str, chain: Chain) -> httpx.Client:
    return httpx.Client(
        base_url=server.url,
        headers={"Authorization": f"Key {secret}"},
        verify=ssl.create_default_context(cafile=chain.ca),
        timeout=120,
    )


def test_queue_submit_status_with_logs_and_result(tls_server: tuple[LiveServer, str], chain: Chain) -> None:
    server, secret = tls_server
    seen = run_fal_client(
        server,
        secret,
        chain,
        """
        handle = fal_client.submit(APP, REQUEST)
        kinds = [type(s).__name__ for s in handle.iter_events(with_logs=True, interval=0.05)]
        with_logs = fal_client.status(APP, handle.request_id, with_logs=True)
        without = fal_client.status(APP, handle.request_id)
        result = handle.get()  # polls without logs, as subscribe() does
        print(json.dumps({"kinds": kinds, "logs": [line["message"] for line in with_logs.logs],
                          "without": without.logs, "metrics": with_logs.metrics, "result": result}))
        """,
    )
    assert seen["kinds"][-1] == "Completed" and set(seen["kinds"]) <= {"Queued", "InProgress", "Completed"}
    assert any("KSampler" in message for message in seen["logs"])
    assert seen["without"] is None  # fal answers `"logs": null` unless they are asked for
    assert seen["metrics"]["inference_time"] > 0
    result = seen["result"]
    assert result["seed"] == 7 and result["prompt"] == "an iguana"
    image = result["images"][0]
    assert (image["width"], image["height"], image["content_type"]) == (1024, 1024, "image/png")
    assert image["url"].startswith("https://")
    with https(server, secret, chain) as client:
        assert client.get(image["url"]).content[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_answers_with_the_result(tls_server: tuple[LiveServer, str], chain: Chain) -> None:
    server, secret = tls_server
    result = run_fal_client(server, secret, chain, "print(json.dumps(fal_client.run(APP, REQUEST)))")
    assert "request_id" not in result and "status_url" not in result  # the result, not a queue handle
    assert result["seed"] == 7 and result["prompt"] == "an iguana"
    assert (result["images"][0]["width"], result["images"][0]["content_type"]) == (1024, "image/png")


def test_cancel_then_result_raises(tls_server: tuple[LiveServer, str], chain: Chain) -> None:
    server, secret = tls_server
    seen = run_fal_client(
        server,
        secret,
        chain,
        """
        # keep the worker busy so the request is still queued when it is cancelled
        httpx.post(BASE + "/v2/slow", json={"seconds": 3}, headers=AUTH).raise_for_status()
        handle = fal_client.submit(APP, REQUEST)
        fal_client.cancel(APP, handle.request_id)
        status = fal_client.status(APP, handle.request_id)
        try:
            handle.get()
            raised = None
        except fal_client.client.FalClientHTTPError as exc:
            raised = [exc.status_code, exc.message]
        print(json.dumps({"status": type(status).__name__, "error": status.error, "raised": raised}))
        """,
    )
    assert seen["status"] == "Completed" and "cancel" in seen["error"]
    assert seen["raised"] == [400, "Request was cancelled"]


def test_validation_error_raises_the_clients_error(tls_server: tuple[LiveServer, str], chain: Chain) -> None:
    server, secret = tls_server
    raised = run_fal_client(
        server,
        secret,
        chain,
        """
        raised = []
        for call in (fal_client.run, fal_client.submit):
            try:
                call(APP, {"num_images": 99})
            except fal_client.client.FalClientHTTPError as exc:
                raised.append([exc.status_code, exc.message])
        print(json.dumps(raised))
        """,
    )
    assert len(raised) == 2
    for status_code, detail in raised:
        assert status_code == 422
        assert {tuple(item["loc"]) for item in detail} == {("body", "prompt"), ("body", "num_images")}


def test_responses_name_the_request_in_x_fal_request_id(
    tls_server: tuple[LiveServer, str], chain: Chain
) -> None:
    server, secret = tls_server
    with https(server, secret, chain) as client:
        ran = client.post(f"/run/{APP}", json=REQUEST)
        assert ran.status_code == 200 and ran.headers["x-fal-request-id"]
        submitted = client.post(f"/{APP}", json=REQUEST)
        request_id = submitted.json()["request_id"]
        assert submitted.headers["x-fal-request-id"] == request_id
        body = submitted.json()
        for response in (client.get(body["status_url"]), client.get(body["response_url"])):
            assert response.headers["x-fal-request-id"] == request_id


def test_status_stream_sends_only_status_bodies_with_the_logs(
    tls_server: tuple[LiveServer, str], chain: Chain
) -> None:
    """Parsed as fal's clients parse it: every event's data is a status; the last is the final one."""
    server, secret = tls_server
    with https(server, secret, chain) as client:
        body = client.post(f"/{APP}", json=REQUEST).json()
        url = body["status_url"] + "/stream"
        with httpx_sse.connect_sse(client, "GET", url, params={"logs": "1"}) as source:
            assert source.response.headers["x-fal-request-id"] == body["request_id"]
            events = [event.json() for event in source.iter_sse()]
        polled = client.get(body["status_url"], params={"logs": "1"}).json()
        with httpx_sse.connect_sse(client, "GET", url) as source:  # a finished request: one event
            plain = [event.json() for event in source.iter_sse()]
    assert all(event["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED") for event in events)
    assert all(isinstance(event["logs"], list) for event in events)
    assert events[-1]["status"] == "COMPLETED" and events[-1]["metrics"]["inference_time"] > 0
    streamed_logs = [line for event in events for line in event["logs"]]  # each event: the new lines
    assert streamed_logs == polled["logs"] and any("KSampler" in line["message"] for line in streamed_logs)
    assert [event["status"] for event in plain] == ["COMPLETED"] and plain[0]["logs"] is None


def test_run_past_the_timeout_answers_504_and_the_request_continues(settings: Settings, chain: Chain) -> None:
    short = replace(settings, tls_cert=chain.cert, tls_key=chain.key, sync_timeout_seconds=0.0)
    with LiveServer(short) as server:
        _, secret = server.service.keys.add_key("fal-client", credits=100, rate_per_minute=600)
        raised = run_fal_client(
            server,
            secret,
            chain,
            """
            try:
                fal_client.run(APP, REQUEST)
            except fal_client.client.FalClientHTTPError as exc:
                print(json.dumps([exc.status_code, exc.message, exc.response_headers["x-fal-request-id"]]))
            """,
        )
        status_code, message, request_id = raised
        assert status_code == 504 and "not ready within 0s" in message
        with https(server, secret, chain) as client:  # the request goes on in the queue
            status = client.get(f"/{APP}/requests/{request_id}/status")
            assert status.status_code in (200, 202) and status.json()["request_id"] == request_id
