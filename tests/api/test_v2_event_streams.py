"""The bound on Comfy API v2 event streams per key (`Settings.max_event_streams`): one stream past it is
refused with the specification's 429 `too_many_streams` and a Retry-After, validated against the
published specification (tests/api/v2_spec.py); other keys and plain polling are not affected, and a
closed stream frees its place."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx

from engine.settings import Settings
from tests.api.conftest import LiveServer
from tests.api.test_comfy_queue import slow
from tests.api.test_v2_jobs import JOBS, checked_job, error, http, wait_status
from tests.api.v2_spec import SpecChecker

LIMIT = 2


@contextlib.contextmanager
def following(client: httpx.Client, job_id: str) -> Iterator[httpx.Response]:
    """An open event stream, once its first frame has arrived (the server has counted it by then)."""
    with client.stream("GET", f"{JOBS}/{job_id}/events") as response:
        assert response.status_code == 200, response.read()
        lines = response.iter_lines()
        assert next(lines).startswith("event: ")
        yield response


def test_a_key_may_hold_only_so_many_event_streams(settings: Settings) -> None:
    with LiveServer(replace(settings, max_event_streams=LIMIT)) as server:
        _, alice = server.service.keys.add_key("alice", credits=10, rate_per_minute=600)
        _, bob = server.service.keys.add_key("bob", credits=10, rate_per_minute=600)
        spec = SpecChecker(server.url)
        with http(server, alice) as own, http(server, alice) as second, http(server, bob) as other:
            job_id = spec.check(own.post(JOBS, json={"workflow": slow(60)})).json()["id"]
            bobs = spec.check(other.post(JOBS, json={"workflow": slow(0)})).json()["id"]
            wait_status(spec, own, job_id, "running")
            with following(own, job_id), following(second, job_id):
                refused = own.get(f"{JOBS}/{job_id}/events")
                body = error(spec, refused, 429, "too_many_streams")
                assert body["details"] == {"limit": LIMIT}
                assert int(refused.headers["Retry-After"]) > 0
                with following(other, bobs):  # another key's streams are its own
                    pass
                assert spec.check(own.get(f"{JOBS}/{job_id}")).status_code == 200  # polling is not limited
                # a stream that was refused took no place: the limit is still the limit
                error(spec, second.get(f"{JOBS}/{job_id}/events"), 429, "too_many_streams")
            # both closed: the server notices at its next write (progress frames come every half second)
            deadline = time.monotonic() + 30
            while True:
                with own.stream("GET", f"{JOBS}/{job_id}/events") as response:
                    if response.status_code == 200:
                        break
                    assert response.status_code == 429 and time.monotonic() < deadline
                time.sleep(0.05)
            spec.check(own.post(f"{JOBS}/{job_id}/cancel"))
            wait_status(spec, own, job_id, "canceled")


def frames(response: httpx.Response, count: int) -> list[tuple[str, dict[str, Any]]]:
    read: list[tuple[str, dict[str, Any]]] = []
    name = ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            read.append((name, json.loads(line.removeprefix("data: "))))
            if len(read) == count:
                break
    return read


def test_a_stream_opens_with_the_status_then_the_outputs_already_committed(settings: Settings) -> None:
    """The specification: on connect, the current snapshot (a `status` event first), then what follows."""
    with LiveServer(replace(settings, open_access=True)) as server:
        spec = SpecChecker(server.url)
        graph = {  # two branches sharing no node run in one order every time: the quick "early" one first
            **slow(60, prefix="late"),
            "early-1": slow(0)["1"],
            "early-2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["early-1", 0], "filename_prefix": "x"},
            },
        }
        with http(server, None) as client:
            job_id = spec.check(client.post(JOBS, json={"workflow": graph})).json()["id"]
            deadline = time.monotonic() + 30
            while not (job := checked_job(spec, client, job_id))["outputs"]:
                assert time.monotonic() < deadline and job["status"] in ("queued", "running"), job
                time.sleep(0.05)
            assert job["status"] == "running"
            with client.stream("GET", f"{JOBS}/{job_id}/events") as response:
                (first, status), (second, output) = frames(response, 2)
            assert (first, spec.check_schema("StatusEvent", status)["status"]) == ("status", "running")
            assert second == "output" and spec.check_schema("Output", output)["id"] == job["outputs"][0]["id"]
            spec.check(client.post(f"{JOBS}/{job_id}/cancel"))
            wait_status(spec, client, job_id, "canceled")
