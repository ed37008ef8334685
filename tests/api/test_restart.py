"""Jobs survive the server being killed: every accepted job finishes after a restart, charged once."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
from aiohttp import web

from engine.jobs.sqlite_store import SqliteStore
from tests.api.conftest import HERE

JOBS = 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(base: Path, graphs: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "engine",
        "--base-dir",
        str(base),
        "--custom-nodes",
        str(HERE / "custom_nodes"),
        "serve",
        "--port",
        str(port),
        "--graphs",
        str(graphs),
        "--no-test-models",
        "--warmup",
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(f"{url}/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server never became ready"
        time.sleep(0.1)


def test_sigkill_loses_nothing_and_charges_once(tmp_path: Path, graphs_dir: Path) -> None:
    key, secret = SqliteStore(tmp_path / "data" / "engine.sqlite3").add_key(
        "k", credits=100, rate_per_minute=600
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers = {"x-api-key": secret}

    server = start(tmp_path, graphs_dir, port)
    try:
        wait_ready(url, server)
        ids = [  # distinct durations: identical graphs would be answered from the executor's cache
            httpx.post(f"{url}/v2/slow", json={"seconds": 0.6 + i / 100}, headers=headers).json()[
                "request_id"
            ]
            for i in range(JOBS)
        ]
        deadline = time.monotonic() + 60
        while (
            httpx.get(f"{url}/v2/requests/{ids[1]}/status", headers=headers).json()["status"] != "PROCESSING"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        os.kill(server.pid, signal.SIGKILL)
        server.wait()

    store = SqliteStore(tmp_path / "data" / "engine.sqlite3")
    before = {job_id: store.get(job_id).status for job_id in ids}
    assert before[ids[0]] == "COMPLETED" and before[ids[1]] == "PROCESSING" and before[ids[-1]] == "QUEUED"
    # What a killed run leaves behind: an image of the interrupted job, another job's, a half-written file.
    outputs = tmp_path / "output" / "api"
    leftovers = [outputs / f"{ids[1]}_00001_.png", outputs / f"{uuid.uuid4()}_00001_.png", outputs / ".tmp-x"]
    for leftover in leftovers:
        leftover.write_bytes(b"partial")

    server = start(tmp_path, graphs_dir, port)
    try:
        wait_ready(url, server)
        deadline = time.monotonic() + 120
        while statuses := [
            httpx.get(f"{url}/v2/requests/{i}/status", headers=headers).json()["status"] for i in ids
        ]:
            if all(status == "COMPLETED" for status in statuses):
                break
            assert time.monotonic() < deadline, statuses
            time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)

    final = store.key(key.id)
    assert (final.balance, final.reserved) == (100 - JOBS, 0)  # each job charged exactly once
    assert all(store.get(job_id).outputs for job_id in ids)
    # The re-run numbered its image from 1 again, over nothing left by the killed run; the rest is gone.
    assert [o.filename for o in store.get(ids[1]).outputs] == [f"{ids[1]}_00001_.png"]
    assert (outputs / f"{ids[1]}_00001_.png").read_bytes() != b"partial"
    assert sorted(path.name for path in outputs.iterdir()) == sorted(
        output.filename for job_id in ids for output in store.get(job_id).outputs
    )


class FlakyReceiver:
    """A webhook receiver that answers 503 to the first delivery and 204 after."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(await request.json())
        return web.Response(status=503 if len(self.calls) == 1 else 204)

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/hook"  # type: ignore[union-attr]

    def __enter__(self) -> str:
        self.thread.start()
        return asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    def __exit__(self, *_: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_webhook_retries_survive_sigkill(tmp_path: Path, graphs_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = SqliteStore(tmp_path / "data" / "engine.sqlite3")
    receiver = FlakyReceiver()
    with receiver as hook:
        server = start(tmp_path, graphs_dir, port, "--allow-private-webhooks", "--open-access")
        try:
            wait_ready(url, server)
            job_id = httpx.post(f"{url}/v2/solid-color?webhook={hook}", json={}).json()["request_id"]
            deadline = time.monotonic() + 60
            while not store.deliveries(job_id):  # the first attempt failed; the next is 5 s away
                assert time.monotonic() < deadline
                time.sleep(0.02)
        finally:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()

        server = start(tmp_path, graphs_dir, port, "--allow-private-webhooks", "--open-access")
        try:
            deadline = time.monotonic() + 60
            while len(store.deliveries(job_id)) < 2:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    attempts = [(d.attempt, d.status_code) for d in store.deliveries(job_id)]
    assert attempts == [(1, 503), (2, 204)]
    assert [call["request_id"] for call in receiver.calls] == [job_id, job_id]
