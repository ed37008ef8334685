"""A fleet of real processes for tests and the benchmark (bench/fleet.py): `engine serve --broker` API
processes and `engine worker --broker` workers on free ports, sharing one base folder (so one output
folder) and one redis-server, each stopped (or killed) by the test. Without a broker, the one
`engine serve` process is the embedded default (SQLite, its own worker)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from engine.jobs.fleet import WorkerInfo, WorkerRegistry
from tests.redis_server import free_port

REPO = Path(__file__).resolve().parents[2]
TEST_NODES = REPO / "tests" / "api" / "custom_nodes"
TEST_GRAPHS = REPO / "tests" / "api" / "graphs"
START_SECONDS = 300.0
"""Starting imports torch and loads every node package: seconds alone, minutes on a busy small machine."""


def until(condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    """Poll `condition` until it gives something true, which is returned; fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def prepare_graphs(directory: Path) -> Path:
    """The repository's endpoints and the test-only ones (slow, broken) in one folder."""
    shutil.copytree(REPO / "graphs", directory, dirs_exist_ok=True)
    shutil.copytree(TEST_GRAPHS, directory, dirs_exist_ok=True)
    return directory


class Process:
    def __init__(self, name: str, command: list[str], log_path: Path, url: str = "") -> None:
        self.name = name
        self.url = url
        """Where it serves HTTP: an API process's API, a worker's /metrics and /health."""
        self.log_path = log_path
        self._log = log_path.open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.popen = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=env)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up, no goodbye, as a machine that loses power."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(30)

    def terminate(self) -> None:
        if self.alive():
            self.popen.terminate()

    def stop(self) -> None:
        self.terminate()
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Fleet:
    def __init__(
        self,
        base: Path,
        broker: str | None,
        *,
        lease_seconds: float = 30.0,
        start_seconds: float = START_SECONDS,
    ) -> None:
        self.base = base
        self.start_seconds = start_seconds
        self.broker = broker
        self.lease_seconds = lease_seconds
        self.graphs = prepare_graphs(base / "graphs")
        self.apis: list[tuple[Process, str]] = []
        self.workers: list[Process] = []

    def _common(self) -> list[str]:
        broker = ["--broker", self.broker] if self.broker is not None else []
        return [
            "--base-dir",
            str(self.base),
            "--graphs",
            str(self.graphs),
            "--custom-nodes",
            str(TEST_NODES),
            *broker,
            "--no-test-models",
        ]

    def start_api(self, *, open_access: bool = True) -> str:
        port = free_port()
        command = [sys.executable, "-m", "engine", "serve", "--port", str(port), *self._common(), "--warmup"]
        command += ["--open-access"] if open_access else ["--host", "127.0.0.1"]
        url = f"http://127.0.0.1:{port}"
        process = Process(f"api{len(self.apis)}", command, self.base / f"api{len(self.apis)}.log", url)
        self.apis.append((process, url))
        return url

    def start_worker(self, warmup: tuple[str, ...] = ()) -> Process:
        """A worker on the CPU that warms up `warmup` (none by default: it takes jobs at once)."""
        assert self.broker is not None, "the embedded default runs its worker in its API process"
        command = [sys.executable, "-m", "engine", "worker", "--device", "cpu", *self._common()]
        command += ["--warmup", *warmup]
        port = free_port()
        command += ["--lease", repr(self.lease_seconds), "--cache-size", "0", "--metrics-port", str(port)]
        name = f"worker{len(self.workers)}"
        process = Process(name, command, self.base / f"{name}.log", f"http://127.0.0.1:{port}")
        self.workers.append(process)
        return process

    def wait_until_ready(self, workers: int) -> None:
        """Every API process answers /ready and `workers` workers beat in the registry."""
        deadline = time.monotonic() + self.start_seconds
        for process, url in self.apis:
            while True:
                assert process.alive(), f"{process.name} exited:\n{process.log()}"
                assert time.monotonic() < deadline, f"{process.name} never became ready:\n{process.log()}"
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
        while len(self.alive_workers()) < workers:
            for process in self.workers:
                assert process.alive(), f"{process.name} exited:\n{process.log()}"
            assert time.monotonic() < deadline, "the workers never registered"
            time.sleep(0.1)

    def alive_workers(self) -> list[WorkerInfo]:
        broker = self.broker
        if broker is None:
            return []

        async def read() -> list[WorkerInfo]:
            registry = WorkerRegistry(broker)
            try:
                return await registry.workers()
            finally:
                await registry.close()

        return asyncio.run(read())

    def stop(self) -> None:
        """Every process asked to stop at once, then waited for (each takes seconds to wind down)."""
        processes = [*self.workers, *(api for api, _ in self.apis)]
        for process in processes:
            process.terminate()
        for process in processes:
            process.stop()


@contextmanager
def fleet(
    base: Path,
    broker: str | None,
    *,
    apis: int,
    workers: int,
    lease_seconds: float = 30.0,
    open_access: bool = True,
    start_seconds: float = START_SECONDS,
    worker_warmup: tuple[str, ...] = (),
) -> Iterator[Fleet]:
    running = Fleet(base, broker, lease_seconds=lease_seconds, start_seconds=start_seconds)
    try:
        for _ in range(apis):
            running.start_api(open_access=open_access)
        for _ in range(workers):
            running.start_worker(worker_warmup)
        running.wait_until_ready(workers)
        yield running
    finally:
        running.stop()
