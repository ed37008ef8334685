"""A fleet of real processes on a real redis-server: `engine serve --broker` API processes with no worker,
`engine worker --broker` workers, one shared output folder.

What a user of a fleet would notice: jobs run side by side on several workers; a worker killed mid-job
loses nothing (the job finishes on another worker, once, and is charged once); any API process answers
for any job (status, its live event stream, its result and image); and credits hold under a burst of
concurrent submits through several API processes (no overdraft, every refusal a 406).
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from engine.jobs.redis_keys import RedisKeyAdmin
from tests.fleet.processes import fleet

pytestmark = pytest.mark.slow


def _until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def _status(url: str, request_id: str, key: str | None = None) -> dict[str, Any]:
    headers = {"x-api-key": key} if key else {}
    return httpx.get(f"{url}/v2/requests/{request_id}/status", headers=headers, timeout=30).json()


def test_two_workers_run_two_jobs_at_once(tmp_path: Path, redis_url: str) -> None:
    with fleet(tmp_path, redis_url, apis=1, workers=2) as running:
        url = running.apis[0][1]
        ids = [httpx.post(f"{url}/v2/slow", json={"seconds": 3}).json()["request_id"] for _ in range(2)]

        def both_running() -> list[Any] | None:
            busy = [w for w in running.alive_workers() if w.current_job is not None]
            statuses = [_status(url, i)["status"] for i in ids]
            return busy if len(busy) == 2 and statuses == ["PROCESSING"] * 2 else None

        busy = _until(both_running, "both jobs running at once")
        assert {w.current_job for w in busy} == set(ids)  # one job on each worker
        assert len({w.id for w in busy}) == 2 and all(w.device == "cpu" for w in busy)
        _until(lambda: all(_status(url, i)["status"] == "COMPLETED" for i in ids), "both results")


def test_a_job_whose_worker_is_killed_completes_on_another_once_and_is_charged_once(
    tmp_path: Path, redis_url: str
) -> None:
    key, secret = RedisKeyAdmin(redis_url).add_key("fleet", credits=10, rate_per_minute=1000)
    with fleet(tmp_path, redis_url, apis=0, workers=2, lease_seconds=5) as running:
        url = running.start_api(open_access=False)
        running.wait_until_ready(2)
        auth = {"x-api-key": secret}
        request_id = httpx.post(f"{url}/v2/slow", json={"seconds": 4}, headers=auth).json()["request_id"]
        holder = _until(
            lambda: next((w for w in running.alive_workers() if w.current_job == request_id), None),
            "a worker running the job",
        )
        victim = next(p for p in running.workers if str(p.popen.pid) == str(holder.pid))
        victim.kill()
        assert _status(url, request_id, secret)["status"] == "PROCESSING"  # nobody has it yet
        done = _until(
            lambda: (body := _status(url, request_id, secret))["status"] in ("COMPLETED", "FAILED") and body,
            "the job finished by the other worker",
            timeout=90,
        )
        assert done["status"] == "COMPLETED", done
        survivor = _until(
            lambda: next(
                (w for w in running.alive_workers() if w.pid != holder.pid and w.current_job is None), None
            ),
            "the other worker idle again",
        )
        assert survivor.jobs_done == 1  # it ran the job to completion once
        result = httpx.get(f"{url}/v2/requests/{request_id}", headers=auth).json()
        assert result["cost"] == 1.0
        charged = RedisKeyAdmin(redis_url).key(key.id)
        assert charged is not None and (charged.balance, charged.reserved) == (9.0, 0.0)


def _events(url: str, request_id: str, into: list[tuple[str, dict[str, Any]]]) -> None:
    with httpx.stream("GET", f"{url}/v2/requests/{request_id}/events", timeout=60) as response:
        assert response.status_code == 200
        event = "message"
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                into.append((event, json.loads(line[len("data: ") :])))
                event = "message"


def test_any_api_process_serves_status_events_and_result_of_a_job(tmp_path: Path, redis_url: str) -> None:
    with fleet(tmp_path, redis_url, apis=2, workers=1) as running:
        (_, first), (_, second) = running.apis
        submitted = httpx.post(f"{first}/v2/slow", json={"seconds": 2}).json()
        request_id = submitted["request_id"]
        seen: list[tuple[str, dict[str, Any]]] = []
        _events(second, request_id, seen)  # through the other API process, to the end of the job
        kinds = [kind for kind, _ in seen]
        assert kinds[0] == "status" and kinds[-1] == "status"
        assert seen[-1][1]["status"] == "COMPLETED"
        progress = [data for kind, data in seen if kind == "progress"]
        assert progress and progress[-1]["max"] == 40  # 2 s in 0.05 s steps, heard from the worker
        assert any(kind == "log" for kind in kinds)
        for url in (first, second):
            assert _status(url, request_id)["status"] == "COMPLETED"
            result = httpx.get(f"{url}/v2/requests/{request_id}").json()
            image = Image.open(io.BytesIO(httpx.get(result["output"].replace(first, url)).content))
            assert image.size == (64, 64) and image.getpixel((0, 0)) == (0, 0, 255)  # the graph's blue


def test_credits_hold_under_500_concurrent_submits_through_two_api_processes(
    tmp_path: Path, redis_url: str
) -> None:
    admin = RedisKeyAdmin(redis_url)
    key, secret = admin.add_key("burst", credits=37, rate_per_minute=100_000)
    with fleet(tmp_path, redis_url, apis=0, workers=2) as running:
        urls = [running.start_api(open_access=False) for _ in range(2)]
        running.wait_until_ready(2)

        async def burst() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=500)
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                calls = [
                    client.post(f"{urls[i % 2]}/v2/slow", json={"seconds": 0}, headers={"x-api-key": secret})
                    for i in range(500)
                ]
                return await asyncio.gather(*calls)

        answers = asyncio.run(burst())
        codes = [answer.status_code for answer in answers]
        assert codes.count(200) == 37 and codes.count(406) == 500 - 37, sorted(set(codes))
        accepted = [answer.json()["request_id"] for answer in answers if answer.status_code == 200]
        _until(
            lambda: all(_status(urls[0], i, secret)["status"] == "COMPLETED" for i in accepted),
            "every accepted job to finish",
            timeout=120,
        )
        spent = admin.key(key.id)
        assert spent is not None and (spent.balance, spent.reserved) == (0.0, 0.0)
