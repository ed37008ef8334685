"""API overhead at 50 concurrent clients: sync round trip minus the request's own queue wait and execution.

    .venv/bin/python bench/api_overhead.py [--clients 50] [--requests 2000] [--endpoint solid-color]

Starts `engine serve` in its own process (open mode, no models needed for solid-color) and drives
it from this one with aiohttp. Each response carries the server's `x-queue-time` (waiting behind
other jobs for the single worker) and `x-inference-time` (running the graph); what is left of the
client-measured round trip is the API's overhead: HTTP, parsing, storing, handing the job to the
worker, noticing it finished, and answering. Target (issue 5): p50 under 5 ms on the CI-sized machine.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def drive(
    url: str, endpoint: str, clients: int, requests: int
) -> tuple[list[float], list[float], float]:
    body = {"width": 8, "height": 8, "output_format": "png"}
    round_trips: list[float] = []
    overheads: list[float] = []
    remaining = iter(range(requests))

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            started = time.perf_counter()
            async with session.post(f"{url}/v1/{endpoint}", json=body) as response:
                await response.read()
                assert response.status == 200, await response.text()
            elapsed = time.perf_counter() - started
            server_side = float(response.headers["x-queue-time"]) + float(
                response.headers["x-inference-time"]
            )
            round_trips.append(elapsed)
            overheads.append(elapsed - server_side)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall = time.perf_counter() - started
    return round_trips, overheads, wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--endpoint", default="solid-color")
    args = parser.parse_args()

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
            "--warmup",
            args.endpoint,
        ]
        server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/ready").status == 200:
                        break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not become ready")
                time.sleep(0.1)
            asyncio.run(drive(url, args.endpoint, args.clients, 100))  # warm the connections and caches
            round_trips, overheads, wall = asyncio.run(drive(url, args.endpoint, args.clients, args.requests))
        finally:
            server.terminate()
            server.wait(30)

    ms = 1000.0
    print(
        f"{args.requests} sync requests to /v1/{args.endpoint}, {args.clients} clients at once, {wall:.1f} s"
    )
    print(f"  throughput            {args.requests / wall:8.1f} requests/s")
    print(
        f"  round trip            p50 {percentile(round_trips, 0.5) * ms:7.2f} ms   "
        f"p99 {percentile(round_trips, 0.99) * ms:7.2f} ms"
    )
    print(
        f"  API overhead          p50 {percentile(overheads, 0.5) * ms:7.2f} ms   "
        f"p99 {percentile(overheads, 0.99) * ms:7.2f} ms   mean {statistics.mean(overheads) * ms:.2f} ms"
    )
    print(
        "  (overhead = round trip - the request's own queue wait - its execution, as the server reports them)"
    )


if __name__ == "__main__":
    main()
