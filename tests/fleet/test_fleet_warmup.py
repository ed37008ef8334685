"""An endpoint whose warm-up failed on the workers is refused by the fleet's API processes too.

The embedded default refuses an endpoint whose own warm-up failed (tests/api/test_service_routes.py);
in a fleet the workers warm up, so each says in its registry entry what failed, and an API process
refuses an endpoint only while every warmed-up worker alive says it failed (engine.jobs.fleet.
failed_everywhere). The test endpoint `broken` always fails (its FailingImages node raises "this node
fails on purpose"), so a worker that warms it up fails its warm-up as every request of it would fail.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.jobs.fleet import WorkerInfo, WorkerRegistry, failed_everywhere
from tests.fleet.processes import REPO, Fleet, fleet, until
from tests.redis_server import RedisServer

WHY = "this node fails on purpose"
"""FailingImages' error (tests/api/custom_nodes/api_test_nodes), what the warm-up of `broken` reports."""


def _worker(name: str, failed: dict[str, str], *, warming_up: bool = False) -> WorkerInfo:
    return WorkerInfo(
        id=name,
        device="cpu",
        host="h",
        pid=1,
        started_at=0.0,
        last_beat=time.time(),
        warming_up=warming_up,
        warmup_failed=failed,
    )


def test_an_endpoint_is_unavailable_only_while_its_warm_up_failed_on_every_warmed_up_worker() -> None:
    a, b = _worker("a", {"x": "no vocab", "y": "oom"}), _worker("b", {"x": "no vocab"})
    assert failed_everywhere([a, b]) == {"x": "no vocab"}  # y runs on b
    assert failed_everywhere([a]) == {"x": "no vocab", "y": "oom"}
    assert failed_everywhere([a, _worker("c", {})]) == {}  # one worker without the failure serves it
    assert failed_everywhere([]) == {}  # none alive: jobs wait in the queue for one
    assert failed_everywhere([_worker("d", {}, warming_up=True)]) == {}  # none has warmed up yet
    assert failed_everywhere([a, _worker("e", {}, warming_up=True)]) == a.warmup_failed  # e cannot say yet
    assert failed_everywhere([a, _worker("f", {"x": "a bad file"})]) == {"x": "no vocab; a bad file"}


def test_a_worker_entry_carries_its_failed_warm_ups_through_redis(redis_url: str) -> None:
    async def beat_and_read() -> dict[str, WorkerInfo]:
        registry = WorkerRegistry(redis_url)
        try:
            await registry.beat(_worker("w", {"broken": WHY}))
            await registry.beat(_worker("v", {}, warming_up=True))
            return {worker.id: worker for worker in await registry.workers()}
        finally:
            await registry.close()

    read = asyncio.run(beat_and_read())
    assert read["w"].warmup_failed == {"broken": WHY} and read["w"].warming_up is False
    assert read["v"].warmup_failed == {} and read["v"].warming_up is True


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory, redis_session: RedisServer) -> Iterator[Fleet]:
    """One API process and one worker that warms up `broken` (and fails)."""
    redis_session.flush()
    base = tmp_path_factory.mktemp("fleet-warm-up")
    with fleet(base, redis_session.url, apis=1, workers=1, worker_warmup=("broken",)) as started:
        yield started


def _listed(url: str) -> dict[str, dict[str, Any]]:
    return {e["id"]: e for e in httpx.get(f"{url}/v1/endpoints", timeout=30).json()["endpoints"]}


@pytest.mark.slow
def test_an_api_process_refuses_an_endpoint_whose_warm_up_failed_on_every_worker(failing: Fleet) -> None:
    url = failing.apis[0][1]
    ready = until(
        lambda: (body := httpx.get(f"{url}/ready", timeout=30).json())["warmup_failed"] and body,
        "the API process to hear of the worker's failed warm-up",
    )
    assert list(ready["warmup_failed"]) == ["broken"] and WHY in ready["warmup_failed"]["broken"]
    assert ready["ready"] is True and "broken" in ready["reason"]  # its other endpoints serve
    for path in ("/v1/broken", "/v2/broken"):
        refused = httpx.post(f"{url}{path}", json={}, timeout=30)
        assert refused.status_code == 503, refused.text
        assert "'broken'" in refused.text and "warm-up failed on every worker" in refused.text
        assert WHY in refused.text
    listed = _listed(url)
    assert listed["broken"]["available"] is False and WHY in listed["broken"]["unavailable_reason"]
    assert listed["solid-color"]["available"] is True
    served = httpx.post(f"{url}/v1/solid-color", json={}, timeout=60)
    assert served.status_code == 200 and served.headers["content-type"].startswith("image/")
    command = [sys.executable, "-m", "engine", "fleet", "status", "--broker", str(failing.broker), "--json"]
    shown = json.loads(subprocess.run(command, capture_output=True, check=True, cwd=REPO).stdout)
    [entry] = shown["workers"]
    assert entry["warming_up"] is False and list(entry["warmup_failed"]) == ["broken"]
    assert WHY in entry["warmup_failed"]["broken"]

    fixed = failing.start_worker()  # warms up nothing, so nothing failed on it
    until(lambda: _listed(url)["broken"]["available"], "the endpoint served again", timeout=300)
    assert httpx.get(f"{url}/ready", timeout=30).json()["warmup_failed"] == {}
    accepted = httpx.post(f"{url}/v2/broken", json={}, timeout=30)
    assert accepted.status_code == 200 and accepted.json()["status"] == "QUEUED"

    fixed.stop()  # it leaves the registry: the failing worker is the only one again
    failing.workers.remove(fixed)
    until(lambda: not _listed(url)["broken"]["available"], "the endpoint refused again")
