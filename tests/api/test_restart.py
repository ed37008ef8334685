"""Jobs survive the server being killed: every accepted job finishes after a restart, charged once."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from engine.jobs.sqlite_store import SqliteStore
from tests.api.conftest import HERE

JOBS = 6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(base: Path, graphs: Path, port: int) -> subprocess.Popen[bytes]:
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
