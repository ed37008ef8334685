"""How long Comfy API v2 assets live, against a real server, every response validated against the
published specification (tests/api/v2_spec.py): job outputs recorded when the worker commits them (no
read of the job needed) and deleted with their job; uploads gone at `now + expires_in`; blobs deleted
once no record names them; an asset a running job references refused deletion with 409 `asset_in_use`.

Bytes are compared with what ComfyUI's /view serves for the same file and with blake3 computed here;
times with the clock read here around each request.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from typing import Any

import blake3
import httpx
import pytest

from engine.settings import Settings
from tests.api.conftest import LiveServer
from tests.api.test_comfy_queue import slow
from tests.api.test_v2_assets import ASSETS, blake3_of, blobs_named, error, png, upload
from tests.api.v2_spec import SpecChecker

JOBS = "/api/v2/jobs"


def seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def finished(server: LiveServer, job_id: str) -> None:
    """Wait for the job to end through the service, never reading it through the v2 routes."""
    job = server.call(server.service.wait(job_id, 60))
    assert job is not None and job.status.terminal, job


@pytest.fixture
def short_retention(settings: Settings) -> Iterator[tuple[LiveServer, SpecChecker]]:
    """Jobs expire as soon as they end (the expiry pass is run by each test when it wants it)."""
    with LiveServer(replace(settings, open_access=True, retention_seconds=0.0)) as live:
        yield live, SpecChecker(live.url)


@pytest.fixture
def open_server(settings: Settings) -> Iterator[tuple[LiveServer, SpecChecker]]:
    with LiveServer(replace(settings, open_access=True)) as live:
        yield live, SpecChecker(live.url)


def test_outputs_are_assets_once_committed_and_go_with_their_job(
    short_retention: tuple[LiveServer, SpecChecker],
) -> None:
    server, spec = short_retention
    with server.client() as client:
        job_id = spec.check(client.post(JOBS, json={"workflow": slow(0, color=77)})).json()["id"]
        finished(server, job_id)
        # never read through v2 before: the output is already an asset, listed with its job
        [listed] = client.get(ASSETS).json()["assets"]
        output = spec.check_schema("Asset", listed)
        saved = client.get(f"/history/{job_id}").json()[job_id]["outputs"]["3"]["images"][0]
        view = client.get("/view", params={**saved, "type": "output"})
        assert view.status_code == 200
        assert output["job_id"] == job_id and output["file_path"] == saved["filename"]
        assert output["hash"] == blake3_of(view.content) and output["size_bytes"] == len(view.content)
        job = spec.check(client.get(f"{JOBS}/{job_id}")).json()
        assert [item["id"] for item in job["outputs"]] == [output["id"]]
        assert output["expires_at"] == job["expires_at"]  # an output lives as long as its job

        # the same bytes uploaded by the owner: a second record over the blob, which keeps it
        kept = spec.check(upload(client, view.content, file_path="copy.png")).json()
        assert kept["hash"] == output["hash"] and kept["created_new"] is False
        digest = output["hash"].removeprefix("blake3:")
        other = spec.check(client.post(JOBS, json={"workflow": slow(0, color=200)})).json()["id"]
        finished(server, other)
        [other_output] = spec.check(client.get(f"{JOBS}/{other}")).json()["outputs"]
        other_digest = other_output["hash"].removeprefix("blake3:")
        assert other_digest != digest and len(blobs_named(server.settings, other_digest)) == 1

        assert server.call(server.service.expire()) == 2  # both jobs are past their retention
        error(spec, spec.check(client.get(f"{JOBS}/{job_id}")), 404, "not_found")
        for gone in (output["id"], other_output["id"]):
            error(spec, spec.check(client.get(f"{ASSETS}/{gone}")), 404, "not_found")
            error(spec, spec.check(client.get(f"{ASSETS}/{gone}/content")), 404, "not_found")
        assert [item["id"] for item in client.get(ASSETS).json()["assets"]] == [kept["id"]]
        assert blobs_named(server.settings, other_digest) == []  # no record names it any more
        assert len(blobs_named(server.settings, digest)) == 1  # the upload still does
        assert spec.check(client.get(kept["url"])).content == view.content


def test_a_graph_queued_through_comfyuis_prompt_route_has_its_outputs_recorded_too(
    open_server: tuple[LiveServer, SpecChecker],
) -> None:
    server, spec = open_server
    with server.client() as client:
        queued = client.post("/prompt", json={"prompt": slow(0, color=9)})
        assert queued.status_code == 200, queued.text
        job_id = queued.json()["prompt_id"]
        finished(server, job_id)
        [output] = spec.check(client.get(f"{JOBS}/{job_id}")).json()["outputs"]
        saved = client.get(f"/history/{job_id}").json()[job_id]["outputs"]["3"]["images"][0]
        view = client.get("/view", params={**saved, "type": "output"})
        assert (output["node_id"], output["name"], output["type"]) == ("3", saved["filename"], "image")
        assert spec.check(client.get(output["url"])).content == view.content


def test_an_upload_expires_after_expires_in(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    data, lasting = png(5), png(6)
    with server.client() as client:
        before = time.time()
        created = spec.check(upload(client, data, expires_in="60")).json()
        after = time.time()
        assert before + 60 - 0.01 <= seconds(created["expires_at"]) <= after + 60 + 0.01
        forever = spec.check(upload(client, lasting, file_path="keep.png")).json()
        assert forever["expires_at"] is None  # no expires_in: it does not expire

        # minting the same reference again extends its life, never shortens it
        body = {"hash": created["hash"], "file_path": "photo.png", "expires_in": 3600}
        again = spec.check(client.post(f"{ASSETS}/from-hash", json=body))
        assert again.status_code == 200 and again.json()["id"] == created["id"]
        extended = seconds(again.json()["expires_at"])
        assert before + 3600 - 0.01 <= extended <= time.time() + 3600 + 0.01
        shorter = spec.check(client.post(f"{ASSETS}/from-hash", json={**body, "expires_in": 60}))
        assert seconds(shorter.json()["expires_at"]) == pytest.approx(extended, abs=0.002)
        minted = spec.check(
            client.post(f"{ASSETS}/from-hash", json={**body, "file_path": "b.png", "expires_in": 120})
        )
        assert minted.status_code == 201
        assert seconds(minted.json()["expires_at"]) < extended

        server.service.assets.clock = lambda: time.time() + 3601  # an hour on
        for gone in (created["id"], minted.json()["id"]):
            error(spec, spec.check(client.get(f"{ASSETS}/{gone}")), 404, "not_found")
            error(spec, spec.check(client.get(f"{ASSETS}/{gone}/content")), 404, "not_found")
            error(spec, spec.check(client.delete(f"{ASSETS}/{gone}")), 404, "not_found")
        assert spec.check(client.head(f"{ASSETS}/by-hash/{created['hash']}")).status_code == 404
        refused = client.post(f"{ASSETS}/from-hash", json={"hash": created["hash"]})
        error(spec, spec.check(refused), 404, "blob_not_found")
        assert [item["id"] for item in client.get(ASSETS).json()["assets"]] == [forever["id"]]

        digest = created["hash"].removeprefix("blake3:")
        assert len(blobs_named(server.settings, digest)) == 1  # until the expiry pass
        assert server.call(server.service.assets.expire()) == 1
        assert blobs_named(server.settings, digest) == []
        assert spec.check(client.get(forever["url"])).content == lasting


def test_hostile_expires_in_names_the_field(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    data = png(3)
    with server.client() as client:

        def refused(response: httpx.Response) -> None:
            # the specification lists no 422 for from-hash: its body is checked against ErrorEnvelope
            checked = spec.check(response) if response.request.url.path == ASSETS else response
            body = error(spec, checked, 422, "invalid_request")
            assert body["details"]["field"] == "expires_in", body
            assert "60" in body["message"] and "604800" in body["message"]

        for text in ("59", "604801", "-60", "0", "1e3", "60.0", "", " ", "0x3c", "\uff16\uff10", "9" * 40):
            refused(upload(client, data, expires_in=text))
        digest = blake3_of(data)
        assert spec.check(upload(client, data, expires_in=" 604800 ")).status_code == 201
        for value in ("120", 59, 604801, -1, 10**30, 120.0, True, [120], {"s": 1}):
            refused(client.post(f"{ASSETS}/from-hash", json={"hash": digest, "expires_in": value}))
        listed = client.get(ASSETS).json()["assets"]
        assert len(listed) == 1  # nothing refused was stored


def held_graph(asset_id: str, seconds: float) -> dict[str, Any]:
    reference = {"__type": "core/ASSET", "info": {"id": asset_id}}
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": reference}},
        "2": {"class_type": "SlowImages", "inputs": {"images": ["1", 0], "seconds": seconds}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "held"}},
    }


def test_an_asset_a_running_or_queued_job_references_cannot_be_deleted(
    open_server: tuple[LiveServer, SpecChecker],
) -> None:
    server, spec = open_server
    with server.client() as client:
        used = spec.check(upload(client, png(4), file_path="used.png")).json()
        waiting = spec.check(upload(client, png(7), file_path="waiting.png")).json()
        free = spec.check(upload(client, png(9), file_path="free.png")).json()
        running = spec.check(client.post(JOBS, json={"workflow": held_graph(used["id"], 60)})).json()
        queued = spec.check(client.post(JOBS, json={"workflow": held_graph(waiting["id"], 0)})).json()
        deadline = time.monotonic() + 60
        while spec.check(client.get(f"{JOBS}/{running['id']}")).json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for held in (used, waiting):
            body = error(spec, spec.check(client.delete(f"{ASSETS}/{held['id']}")), 409, "asset_in_use")
            assert held["id"] not in body["message"]  # which hold applies is never said
            assert spec.check(client.get(f"{ASSETS}/{held['id']}")).status_code == 200
        assert spec.check(client.delete(f"{ASSETS}/{free['id']}")).status_code == 204
        for hostile in ("%2e%2e%2f", "x" * 2000, "' OR 1=1 --", used["id"].upper()):
            error(spec, spec.check(client.delete(f"{ASSETS}/{hostile}")), 404, "not_found")

        assert spec.check(client.post(f"{JOBS}/{running['id']}/cancel")).status_code == 200
        finished(server, running["id"])
        finished(server, queued["id"])
        for held in (used, waiting):  # both jobs have ended: nothing holds them
            assert spec.check(client.delete(f"{ASSETS}/{held['id']}")).status_code == 204
        digest = blake3.blake3(png(4)).hexdigest()
        assert blobs_named(server.settings, digest) == []


def test_a_cached_output_node_is_still_the_jobs_output(open_server: tuple[LiveServer, SpecChecker]) -> None:
    """The same graph twice: the second run takes its SaveImage from the cache, as ComfyUI does (the
    same file in its history), and that file is its output too, a record of its own over one blob."""
    server, spec = open_server
    with server.client() as client:
        first, second = (
            spec.check(client.post(JOBS, json={"workflow": slow(0, color=31)})).json()["id"] for _ in range(2)
        )
        finished(server, first)
        finished(server, second)
        history = client.get("/history").json()
        saved = [history[job]["outputs"]["3"]["images"][0]["filename"] for job in (first, second)]
        assert saved[0] == saved[1]
        outputs = [spec.check(client.get(f"{JOBS}/{job}")).json()["outputs"] for job in (first, second)]
        assert [[item["name"] for item in found] for found in outputs] == [saved[:1], saved[1:]]
        assert outputs[0][0]["hash"] == outputs[1][0]["hash"] and outputs[0][0]["id"] != outputs[1][0]["id"]
