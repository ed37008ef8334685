"""Faults of the storage under a running server: a full data disk, a database locked by another process.

A real tmpfs is mounted for the data folder (the suite runs as root, as CI does), so the disk fills
the way a real one does: SQLite's next write fails with SQLITE_FULL.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from engine.settings import Settings
from tests.api.conftest import LiveServer


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "data"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk refuses another byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        chunk = 1 << 20
        while chunk:
            try:
                os.write(fd, b"\0" * chunk)
            except OSError:
                chunk //= 2
    finally:
        os.close(fd)
    return filler


STALL_SECONDS = 5.0
"""Far above any answer's time on a loaded machine, far below SQLite's 30 s wait for a lock."""


def status(client: httpx.Client, job_id: str) -> str:
    return client.get(f"/v2/requests/{job_id}/status").json()["status"]


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


SQLITE_ONLY = pytest.mark.parametrize("broker", [None], ids=["sqlite"])
"""A full disk and a held file lock are the embedded store's failures; a fleet's are Redis's."""


@SQLITE_ONLY
def test_a_full_disk_pauses_the_worker_and_loses_nothing(settings: Settings, small_disk: Path) -> None:
    with LiveServer(replace(settings, data_dir=small_disk)) as server:
        key, secret = server.service.keys.add_key("tester", credits=10, rate_per_minute=600)
        with server.client(secret) as client:
            first = client.post("/v2/slow", json={"seconds": 1.5}).json()
            second = client.post("/v2/solid-color", json={}).json()
            running, queued = first["request_id"], second["request_id"]
            wait_until(lambda: status(client, running) == "PROCESSING")
            filler = fill(small_disk)

            # The running job finishes but cannot be recorded: the worker holds on and says so.
            wait_until(lambda: client.get("/health").status_code == 503)
            health = client.get("/health").json()
            assert health["worker"]["state"] == "store failing" and "full" in health["worker"]["error"]
            assert client.get("/ready").status_code == 503
            assert status(client, running) == "PROCESSING" and status(client, queued) == "QUEUED"

            refused = client.post("/v2/solid-color", json={})
            assert refused.status_code == 503 and "storage is full" in refused.json()["error"]
            assert int(refused.headers["Retry-After"]) > 0

            filler.unlink()
            wait_until(lambda: status(client, queued) == "COMPLETED")
            assert status(client, running) == "COMPLETED"
            assert client.get(f"/v2/requests/{running}").json()["output"]
            assert client.get("/health").status_code == 200
        charged = server.service.keys.key(key.id)
        assert charged is not None
        assert charged.reserved == 0
        assert charged.balance == pytest.approx(10 - first["cost"] - second["cost"], abs=1e-9)


@SQLITE_ONLY
def test_storage_waits_happen_off_the_event_loop(settings: Settings) -> None:
    """While another process holds the database's write lock, a submission waits for it, and the
    server keeps answering everything else (a loop blocked on the lock would answer nothing until the
    lock is released, which here happens only after those answers arrive)."""
    with LiveServer(replace(settings, open_access=True)) as server:
        blocker = sqlite3.connect(server.service.settings.database_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        submitted: list[httpx.Response] = []
        with server.client() as client:
            submitting = threading.Thread(
                target=lambda: submitted.append(client.post("/v2/solid-color", json={}))
            )
            submitting.start()
            try:
                time.sleep(0.3)  # the submission is now waiting on the lock
                with server.client(timeout=STALL_SECONDS) as other:
                    assert other.get("/health").status_code == 200
                    assert other.get("/v1/endpoints").status_code == 200
                assert not submitted, "the submission did not wait for the lock"
            finally:
                blocker.execute("COMMIT")
                blocker.close()
                submitting.join(60)
        assert submitted and submitted[0].status_code == 200


def test_the_worker_outlives_a_broken_store(server: LiveServer) -> None:
    """A store that fails in a way nobody planned for: the worker reports it through /health and
    /ready (so a supervisor can act) and carries on once the store works again."""

    def broken_claim(**_: object) -> None:
        raise RuntimeError("the store's driver broke")

    database = server.service.store
    working_claim = database.claim
    with server.client() as client:
        assert client.get("/health").status_code == 200
        database.claim = broken_claim  # type: ignore[method-assign]
        server.loop.call_soon_threadsafe(server.service.worker.wake)  # type: ignore[union-attr]
        wait_until(lambda: client.get("/health").status_code == 503, 10)
        worker = client.get("/health").json()["worker"]
        assert worker["state"] == "store failing" and "driver broke" in worker["error"]
        assert client.get("/ready").status_code == 503
        database.claim = working_claim  # type: ignore[method-assign]
        job_id = client.post("/v2/solid-color", json={}).json()["request_id"]
        wait_until(lambda: status(client, job_id) == "COMPLETED", 30)
        assert client.get("/health").status_code == 200
