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
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from engine.jobs.redis_keys import RedisKeyAdmin
from engine.jobs.redis_store import RedisStore
from engine.jobs.types import Job, JobStatus
from tests.api.comfy_client import ComfyClient
from tests.api.test_comfy_queue import slow
from tests.fleet.processes import REPO, Fleet, fleet, until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.slow
LEASE_SECONDS = 5.0


@dataclass(frozen=True)
class Running:
    """One fleet for the module (starting its processes is most of the time): two API processes that
    require keys, two workers, and a key with credits to spare."""

    fleet: Fleet
    urls: list[str]
    broker: str
    secret: str

    @property
    def auth(self) -> dict[str, str]:
        return {"x-api-key": self.secret}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, redis_session: RedisServer) -> Iterator[Running]:
    redis_session.flush()
    _, secret = RedisKeyAdmin(redis_session.url).add_key("fleet", credits=1000, rate_per_minute=100_000)
    base = tmp_path_factory.mktemp("fleet")
    with fleet(
        base, redis_session.url, apis=2, workers=2, lease_seconds=LEASE_SECONDS, open_access=False
    ) as started:
        yield Running(started, [url for _, url in started.apis], redis_session.url, secret)


def _status(url: str, request_id: str, key: str) -> dict[str, Any]:
    return httpx.get(f"{url}/v2/requests/{request_id}/status", headers={"x-api-key": key}, timeout=30).json()


def test_two_workers_run_two_jobs_at_once(running: Running) -> None:
    url, key = running.urls[0], running.secret
    ids = [
        httpx.post(f"{url}/v2/slow", json={"seconds": 3}, headers=running.auth).json()["request_id"]
        for _ in range(2)
    ]

    def both_running() -> list[Any] | None:
        busy = [w for w in running.fleet.alive_workers() if w.current_job is not None]
        statuses = [_status(url, i, key)["status"] for i in ids]
        return busy if len(busy) == 2 and statuses == ["PROCESSING"] * 2 else None

    busy = until(both_running, "both jobs running at once")
    assert {w.current_job for w in busy} == set(ids)  # one job on each worker
    assert len({w.id for w in busy}) == 2 and all(w.device == "cpu" for w in busy)
    until(lambda: all(_status(url, i, key)["status"] == "COMPLETED" for i in ids), "both results")


def _events(url: str, request_id: str, auth: dict[str, str], into: list[tuple[str, dict[str, Any]]]) -> None:
    with httpx.stream("GET", f"{url}/v2/requests/{request_id}/events", headers=auth, timeout=60) as response:
        assert response.status_code == 200
        event = "message"
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                into.append((event, json.loads(line[len("data: ") :])))
                event = "message"


def test_any_api_process_serves_status_events_and_result_of_a_job(running: Running) -> None:
    first, second = running.urls
    submitted = httpx.post(f"{first}/v2/slow", json={"seconds": 2}, headers=running.auth).json()
    request_id = submitted["request_id"]
    seen: list[tuple[str, dict[str, Any]]] = []
    _events(second, request_id, running.auth, seen)  # through the other API process, to the job's end
    kinds = [kind for kind, _ in seen]
    assert kinds[0] == "status" and kinds[-1] == "status"
    assert seen[-1][1]["status"] == "COMPLETED"
    progress = [data for kind, data in seen if kind == "progress"]
    assert progress and progress[-1]["max"] == 40  # 2 s in 0.05 s steps, heard from the worker
    assert any(kind == "log" for kind in kinds)
    for url in (first, second):
        assert _status(url, request_id, running.secret)["status"] == "COMPLETED"
        result = httpx.get(f"{url}/v2/requests/{request_id}", headers=running.auth).json()
        image = Image.open(io.BytesIO(httpx.get(result["output"].replace(first, url)).content))
        assert image.size == (64, 64) and image.getpixel((0, 0)) == (0, 0, 255)  # the graph's blue


def test_credits_hold_under_500_concurrent_submits_through_two_api_processes(running: Running) -> None:
    admin = RedisKeyAdmin(running.broker)
    key, secret = admin.add_key("burst", credits=37, rate_per_minute=100_000)
    urls = running.urls

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
    until(
        lambda: all(_status(urls[0], i, secret)["status"] == "COMPLETED" for i in accepted),
        "every accepted job to finish",
        timeout=120,
    )
    spent = admin.key(key.id)
    assert spent is not None and (spent.balance, spent.reserved) == (0.0, 0.0)


def test_comfyui_websocket_on_one_api_process_hears_a_prompt_queued_on_another(running: Running) -> None:
    first, second = running.urls
    with ComfyClient(second, running.secret) as watcher:
        queued = httpx.post(
            f"{first}/prompt",
            json={"prompt": slow(3), "client_id": watcher.client_id},
            headers=running.auth,
        )
        assert queued.status_code == 200, queued.text
        prompt_id = queued.json()["prompt_id"]
        frames = watcher.until_done(prompt_id, timeout=60)
    texts = [frame for frame in frames if isinstance(frame, tuple)]
    steps = [data for kind, data in texts if kind == "progress" and data["prompt_id"] == prompt_id]
    assert steps and steps[-1]["value"] == steps[-1]["max"] == 60  # 3 s in 0.05 s steps, node 2's
    executed = [data for kind, data in texts if kind == "executed" and data["prompt_id"] == prompt_id]
    assert [data["node"] for data in executed] == ["3"] and executed[0]["output"]["images"][0][
        "type"
    ] == "output"
    assert any(kind == "execution_success" and data["prompt_id"] == prompt_id for kind, data in texts)


def _gauges(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_fleet_status_and_metrics_show_workers_jobs_and_queues(running: Running) -> None:
    url = running.urls[1]
    busy = [
        httpx.post(f"{url}/v2/slow", json={"seconds": 4}, headers=running.auth).json()["request_id"]
        for _ in range(2)
    ]
    until(lambda: {w.current_job for w in running.fleet.alive_workers()} == set(busy), "both workers busy")
    waiting = [
        httpx.post(f"{url}/v2/slow", json={"seconds": 0}, headers=running.auth).json()["request_id"]
        for _ in range(3)
    ]
    command = [sys.executable, "-m", "engine", "fleet", "status", "--broker", running.broker, "--json"]
    shown = json.loads(subprocess.run(command, capture_output=True, check=True, cwd=REPO).stdout)
    assert shown["queues"] == {"slow": 3} and shown["queued"] == 3
    assert sorted(w["current_job"] for w in shown["workers"]) == sorted(busy)
    assert {w["device"] for w in shown["workers"]} == {"cpu"} and len(shown["workers"]) == 2
    for api in running.urls:  # every API process reports the fleet's figures, not its own
        gauges = _gauges(api)
        assert gauges[("engine_fleet_queue_depth", (("endpoint", "slow"),))] == 3
        assert gauges[("engine_fleet_workers_alive", ())] == 2
        assert gauges[("engine_queue_depth", ())] == 3
    until(
        lambda: all(_status(url, i, running.secret)["status"] == "COMPLETED" for i in busy + waiting),
        "the jobs to finish",
    )
    assert ("engine_fleet_queue_depth", (("endpoint", "slow"),)) not in _gauges(url)  # an empty queue
    registered = {w.pid: w.jobs_done for w in running.fleet.alive_workers()}
    for worker in running.fleet.workers:  # each worker's own /metrics: the jobs it ran itself
        finished = [
            value for (name, _), value in _gauges(worker.url).items() if name == "engine_jobs_finished_total"
        ]
        assert sum(finished) == registered[worker.popen.pid] >= 1


def test_a_cancellation_through_one_api_process_stops_the_job_on_its_worker(running: Running) -> None:
    first, second = running.urls
    request_id = httpx.post(f"{second}/v2/slow", json={"seconds": 30}, headers=running.auth).json()[
        "request_id"
    ]
    until(lambda: any(w.current_job == request_id for w in running.fleet.alive_workers()), "the job running")
    asked = time.monotonic()
    answer = httpx.post(f"{first}/v2/requests/{request_id}/cancel", headers=running.auth)
    assert answer.status_code == 200 and answer.json()["cancel_requested"] is True
    until(
        lambda: _status(first, request_id, running.secret)["status"] == "FAILED",  # Segmind's "cancelled"
        "the job to stop",
        timeout=30,
    )
    assert time.monotonic() - asked < 10  # interrupted, not run to its end 30 s later
    job = asyncio.run(_job(running.broker, request_id))
    assert job.status == JobStatus.CANCELLED
    until(lambda: all(w.current_job != request_id for w in running.fleet.alive_workers()), "the worker free")


def test_comfyui_interrupt_through_one_api_process_stops_a_prompt_running_on_a_worker(
    running: Running,
) -> None:
    first, second = running.urls
    queued = httpx.post(f"{second}/prompt", json={"prompt": slow(30)}, headers=running.auth)
    assert queued.status_code == 200, queued.text
    prompt_id = queued.json()["prompt_id"]
    until(
        lambda: any(w.current_job == prompt_id for w in running.fleet.alive_workers()), "the prompt running"
    )
    asked = time.monotonic()
    assert (
        httpx.post(f"{first}/interrupt", json={"prompt_id": prompt_id}, headers=running.auth).status_code
        == 200
    )
    until(
        lambda: asyncio.run(_job(running.broker, prompt_id)).status.terminal, "the prompt to stop", timeout=30
    )
    assert time.monotonic() - asked < 10  # interrupted, not run to its end
    assert asyncio.run(_job(running.broker, prompt_id)).status == JobStatus.CANCELLED
    history = httpx.get(f"{first}/history/{prompt_id}", headers=running.auth).json()[prompt_id]
    assert history["status"]["status_str"] == "error"  # as ComfyUI reports an interrupted prompt
    assert "execution_interrupted" in [kind for kind, _ in history["status"]["messages"]]
    until(lambda: all(w.current_job != prompt_id for w in running.fleet.alive_workers()), "the worker free")


async def _job(broker: str, job_id: str) -> Job:
    store = RedisStore(broker)
    try:
        job = await store.get(job_id)
    finally:
        await store.close()
    assert job is not None
    return job


def _log_lines(broker: str, job_id: str) -> list[str]:
    async def read() -> list[str]:
        store = RedisStore(broker)
        try:
            return [line.message for line in await store.logs(job_id)]
        finally:
            await store.close()

    return asyncio.run(read())


def test_a_job_whose_worker_is_killed_completes_on_another_once_and_is_charged_once(running: Running) -> None:
    """Last in the module: it kills a worker (and starts another, so that the fleet is whole again)."""
    admin = RedisKeyAdmin(running.broker)
    key, secret = admin.add_key("killed", credits=10, rate_per_minute=1000)
    url, auth = running.urls[0], {"x-api-key": secret}
    done_before = {w.pid: w.jobs_done for w in running.fleet.alive_workers()}
    request_id = httpx.post(f"{url}/v2/slow", json={"seconds": 4}, headers=auth).json()["request_id"]
    holder = until(
        lambda: next((w for w in running.fleet.alive_workers() if w.current_job == request_id), None),
        "a worker running the job",
    )
    victim = next(p for p in running.fleet.workers if p.popen.pid == holder.pid)
    victim.kill()
    assert _status(url, request_id, secret)["status"] == "PROCESSING"  # its lease has not run out yet
    done = until(
        lambda: (body := _status(url, request_id, secret))["status"] in ("COMPLETED", "FAILED") and body,
        "the job finished by the other worker",
        timeout=90,
    )
    assert done["status"] == "COMPLETED", done
    survivor = until(
        lambda: next(
            (w for w in running.fleet.alive_workers() if w.pid != holder.pid and w.current_job is None), None
        ),
        "the other worker idle again",
    )
    assert survivor.jobs_done == done_before[survivor.pid] + 1  # the other worker finished it
    lines = _log_lines(running.broker, request_id)
    assert lines.count("started") == 2  # run on both workers: at least once
    assert sum(line.startswith("completed in") for line in lines) == 1  # completed exactly once
    assert httpx.get(f"{url}/v2/requests/{request_id}", headers=auth).json()["cost"] == 1.0
    charged = admin.key(key.id)
    assert charged is not None and (charged.balance, charged.reserved) == (9.0, 0.0)  # charged once
    running.fleet.workers.remove(victim)
    running.fleet.start_worker()
