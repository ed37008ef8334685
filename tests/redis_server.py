"""A real redis-server (the Debian package `make setup` installs) on a free port, for the fleet's store.

Started once per test session in a temporary folder and stopped at its end; every test that uses it
starts from an empty server (FLUSHALL), so tests cannot see each other's jobs or keys.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

READY_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """`redis-server` in `directory`, listening on 127.0.0.1 only; `persist` turns the append-only
    file on (every write logged, fsync every second), else the server keeps nothing on disk."""

    def __init__(self, directory: Path, *, persist: bool = False, port: int | None = None) -> None:
        self.directory = directory
        self.persist = persist
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed: run `make setup`"
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
        command += ["--save", "", "--appendonly", "yes" if self.persist else "no", "--protected-mode", "yes"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=self.directory
        )
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + READY_SECONDS
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                assert self.process.poll() is None, f"redis-server exited with {self.process.returncode}"
                assert time.monotonic() < deadline, "redis-server did not answer in time"
                time.sleep(0.02)
        client.close()
        return self

    def flush(self) -> None:
        client = redis.Redis.from_url(self.url)
        client.flushall()
        client.close()

    def stop(self) -> None:
        """Stop as an operator would (SIGTERM: with persistence on, the append-only file is flushed)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
