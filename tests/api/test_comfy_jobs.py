"""ComfyUI's jobs API (/api/jobs) and history paging, with the fields, status names, pagination and error
answers of ComfyUI's server.py and comfy_execution/jobs.py, and hostile query values refused by name.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.api.comfy_client import ComfyClient
from tests.api.conftest import LiveServer
from tests.api.test_comfy_prompt import FAILING
from tests.api.test_comfy_queue import slow

JOB_FIELDS = {
    "id",
    "status",
    "priority",
    "create_time",
    "execution_start_time",
    "execution_end_time",
    "outputs_count",
    "previewable_outputs_count",
    "preview_output",
    "workflow_id",
}


def test_jobs_listing_detail_and_cancel(server: LiveServer) -> None:
    workflow = {"extra_pnginfo": {"workflow": {"id": "wf-7"}}}
    with ComfyClient(server.url) as client:
        done = [client.queue(slow(0, color=i, prefix=f"job{i}"), extra_data=workflow) for i in range(3)]
        failed = client.queue(FAILING)
        client.until_done(failed)
        running = client.queue(slow(60, color=40))
        client.until_running(running, "2")
        pending = client.queue(slow(0, color=41))
        http = client.http

        listing = http.get("/api/jobs").json()
        assert [job["id"] for job in listing["jobs"]] == [pending, running, failed, *reversed(done)]
        assert listing["pagination"] == {"offset": 0, "limit": None, "total": 6, "has_more": False}
        statuses = {job["id"]: job["status"] for job in listing["jobs"]}
        assert [statuses[i] for i in (pending, running, failed, done[0])] == [
            "pending",
            "in_progress",
            "failed",
            "completed",
        ]
        page = http.get("/api/jobs", params={"limit": 2, "offset": 1, "sort_order": "asc"}).json()
        assert [job["id"] for job in page["jobs"]] == done[1:3]
        assert page["pagination"] == {"offset": 1, "limit": 2, "total": 6, "has_more": True}
        unfinished = http.get("/api/jobs", params={"status": "pending,in_progress"}).json()
        assert {job["id"] for job in unfinished["jobs"]} == {pending, running}
        assert unfinished["jobs"][0] == {  # ComfyUI leaves a queued job's absent fields out
            "id": pending,
            "status": "pending",
            "priority": unfinished["jobs"][0]["priority"],
            "create_time": unfinished["jobs"][0]["create_time"],
            "outputs_count": 0,
            "previewable_outputs_count": 0,
        }
        of_workflow = http.get("/api/jobs", params={"workflow_id": "wf-7"}).json()
        assert {job["id"] for job in of_workflow["jobs"]} == set(done)

        detail = http.get(f"/api/jobs/{done[0]}").json()
        assert set(detail) == JOB_FIELDS | {"outputs", "execution_status", "workflow"}
        assert detail["status"] == "completed" and detail["workflow_id"] == "wf-7"
        assert detail["outputs_count"] == detail["previewable_outputs_count"] == 1
        image = {"filename": "job0_00001_.png", "subfolder": "", "type": "output"}
        assert detail["preview_output"] == {**image, "nodeId": "3", "mediaType": "images"}
        assert detail["outputs"] == {"3": {"images": [image]}}
        assert detail["execution_status"] == client.history(done[0])[done[0]]["status"]
        assert detail["workflow"]["prompt"] == slow(0, color=0, prefix="job0")
        assert detail["execution_start_time"] <= detail["execution_end_time"]
        error = http.get(f"/api/jobs/{failed}").json()["execution_error"]
        assert (
            error["node_type"] == "FailingImages"
            and error["exception_message"] == "this node fails on purpose"
        )

        assert http.post(f"/api/jobs/{pending}/cancel").json() == {"cancelled": True}
        assert http.get(f"/api/jobs/{pending}").status_code == 404  # dequeued: forgotten, as in ComfyUI
        assert http.post(f"/api/jobs/{done[0]}/cancel").json() == {"cancelled": False}
        assert http.post(f"/api/jobs/{uuid.uuid4()}/cancel").json() == {"cancelled": False}
        assert http.post("/api/jobs/cancel", json={"job_ids": [running, str(uuid.uuid4())]}).json() == {
            "cancelled": True
        }
        client.until_done(running)
        assert http.get(f"/api/jobs/{running}").json()["status"] == "cancelled"
        assert http.get(f"/api/jobs/{uuid.uuid4()}").json() == {"error": "Job not found"}
        assert httpx.get(f"{server.url}/jobs").status_code == 404  # served under /api only, as in ComfyUI


def test_history_pages_as_comfyui_does(server: LiveServer) -> None:
    with ComfyClient(server.url) as client:
        prompts = [client.queue(slow(0, color=50 + i)) for i in range(4)]
        client.until_done(prompts[-1])
        http = client.http
        assert list(http.get("/history").json()) == prompts
        assert list(http.get("/history", params={"max_items": 2}).json()) == prompts[2:]  # the latest
        assert list(http.get("/history", params={"max_items": 2, "offset": 1}).json()) == prompts[1:3]
        assert http.post("/history", json={"delete": [prompts[0]]}).status_code == 200
        assert list(http.get("/history").json()) == prompts[1:]
        assert http.post("/history", json={"clear": True}).status_code == 200
        assert http.get("/history").json() == {}
        assert http.get(f"/api/history/{prompts[1]}").json() == {}


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/jobs", {"limit": "-1"}, "limit"),
        ("/api/jobs", {"limit": "0"}, "limit"),
        ("/api/jobs", {"limit": "abc"}, "limit"),
        ("/api/jobs", {"limit": "9" * 40}, "limit"),
        ("/api/jobs", {"limit": "1e3"}, "limit"),
        ("/api/jobs", {"limit": "١٢"}, "limit"),  # Arabic-Indic digits, which int() would take
        ("/api/jobs", {"offset": "x"}, "offset"),
        ("/api/jobs", {"offset": "9" * 40}, "offset"),
        ("/api/jobs", {"status": "done"}, "status"),
        ("/api/jobs", {"sort_by": "name"}, "sort_by"),
        ("/api/jobs", {"sort_order": "up"}, "sort_order"),
        ("/history", {"max_items": "-1"}, "max_items"),
        ("/history", {"max_items": "many"}, "max_items"),
        ("/history", {"max_items": "99999999999"}, "max_items"),
        ("/history", {"offset": "1.5"}, "offset"),
    ],
)
def test_bad_query_values_are_refused_by_name(
    server: LiveServer, path: str, params: dict[str, str], field: str
) -> None:
    response = httpx.get(f"{server.url}{path}", params=params)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]


def test_hostile_bodies_of_the_queue_routes(server: LiveServer) -> None:
    url = server.url
    for path in ("/queue", "/history", "/free", "/api/jobs/cancel"):
        assert httpx.post(f"{url}{path}", content=b"{oops").status_code == 400
        assert httpx.post(f"{url}{path}", json=["delete"]).status_code == 400
    assert httpx.post(f"{url}/interrupt", content=b"{oops").status_code == 400
    assert httpx.post(f"{url}/interrupt", json={"prompt_id": 5}).status_code == 400
    for body in ({"delete": "abc"}, {"delete": [1, 2]}, {"delete": ["x"] * 1001}, {"clear": "yes"}):
        assert httpx.post(f"{url}/queue", json=body).status_code == 400
        assert httpx.post(f"{url}/history", json=body).status_code == 400
    assert httpx.post(f"{url}/api/jobs/cancel", json={"job_ids": "x"}).status_code == 400
    invalid = httpx.post(f"{url}/api/jobs/cancel", json={"job_ids": ["../etc", 7, str(uuid.uuid4())]})
    assert invalid.status_code == 400 and invalid.json()["invalid_ids"] == ["../etc", "7"]
    for name in ("..%2F..%2Fetc%2Fpasswd", "%00", "x" * 2000):
        assert httpx.get(f"{url}/history/{name}").json() == {}
        assert httpx.get(f"{url}/api/jobs/{name}").status_code == 404
