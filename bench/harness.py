"""What the API benchmarks share: an `engine serve` of their own, the Segmind sync request they time, and
percentiles.

The scripts beside this one import it by name (`python bench/<script>.py` puts this folder on the path).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
MS = 1000.0
SOLID_COLOR = {"width": 8, "height": 8, "output_format": "png"}
"""The body the benchmarks send to solid-color: an 8x8 PNG, so the run itself costs next to nothing."""
READY_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def line(label: str, values: list[float], width: int = 34) -> str:
    """A report line: the label, then the median and 99th percentile of `values` (seconds) in ms."""
    p50, p99 = percentile(values, 0.5) * MS, percentile(values, 0.99) * MS
    return f"  {label:{width}s} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms"


@contextmanager
def served_engine(warmup: str) -> Iterator[str]:
    """`engine serve` in its own process (open access, no test models, a throwaway base folder, `warmup`
    loaded first), ready to answer; yields its URL and stops it afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as base:
        command = [
            sys.executable,
            "-m",
            "engine",
            "--base-dir",
            base,
            "serve",
            "--port",
            str(port),
            "--graphs",
            str(REPO / "graphs"),
            "--no-test-models",
            "--open-access",
            "--warmup",
            warmup,
        ]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_ready(url)
            yield url
        finally:
            server.terminate()
            server.wait(30)


def wait_until_ready(url: str) -> None:
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            if urllib.request.urlopen(f"{url}/ready").status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit("the server did not become ready")
        time.sleep(0.1)


async def timed_sync_request(session: aiohttp.ClientSession, url: str, endpoint: str) -> tuple[float, float]:
    """(round trip, overhead) of one POST /v1/<endpoint>, in seconds: the overhead is the round trip less
    the server's own x-queue-time and x-inference-time, so what is left is the API's."""
    started = time.perf_counter()
    async with session.post(f"{url}/v1/{endpoint}", json=SOLID_COLOR) as response:
        await response.read()
        assert response.status == 200, await response.text()
    elapsed = time.perf_counter() - started
    server_side = float(response.headers["x-queue-time"]) + float(response.headers["x-inference-time"])
    return elapsed, elapsed - server_side
