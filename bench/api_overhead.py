"""API overhead: sync round trips at 50 concurrent clients, and /health latency during a submit burst.

    .venv/bin/python bench/api_overhead.py [--scenario all|sync|burst] [--clients 50] [--requests 2000]
        [--burst-clients 100] [--burst-requests 20] [--endpoint solid-color]

Starts `engine serve` in its own process (open mode, no models needed for solid-color) and drives
it from this one with aiohttp. Each response carries the server's `x-queue-time` (waiting behind
other jobs for the single worker) and `x-inference-time` (running the graph); what is left of the
client-measured round trip is the API's overhead: HTTP, parsing, storing, handing the job to the
worker, noticing it finished, and answering. Target (issue 5): p50 under 5 ms on the CI-sized machine.

The burst: `--burst-clients` clients each submit `--burst-requests` requests to the queued route
(`/v2/<endpoint>`) as fast as they are answered, while one more client polls `/health` back to back.
Whatever blocks the event loop (the job store's writes, say) shows up as /health latency: a load
balancer's health check must not time out because clients are submitting. Target (issue 8): /health
p99 under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
from harness import MS, SOLID_COLOR, line, served_engine, timed_sync_request

WIDTH = 21
"""Report labels' width, so the figures line up under the throughput's."""


async def drive(
    url: str, endpoint: str, clients: int, requests: int
) -> tuple[list[float], list[float], float]:
    round_trips: list[float] = []
    overheads: list[float] = []
    remaining = iter(range(requests))

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in remaining:
            round_trip, overhead = await timed_sync_request(session, url, endpoint)
            round_trips.append(round_trip)
            overheads.append(overhead)

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        wall = time.perf_counter() - started
    return round_trips, overheads, wall


async def burst(
    url: str, endpoint: str, clients: int, requests: int
) -> tuple[list[float], list[float], float]:
    """(submit latencies, /health latencies during the burst, wall seconds of the burst)."""
    submits: list[float] = []
    health: list[float] = []
    done = asyncio.Event()

    async def submitter(session: aiohttp.ClientSession) -> None:
        for _ in range(requests):
            started = time.perf_counter()
            async with session.post(f"{url}/v2/{endpoint}", json=SOLID_COLOR) as response:
                await response.read()
                assert response.status == 200, await response.text()
            submits.append(time.perf_counter() - started)

    async def poll_health() -> None:
        async with aiohttp.ClientSession() as session:
            while not done.is_set():
                started = time.perf_counter()
                async with session.get(f"{url}/health") as response:
                    await response.read()
                    assert response.status == 200, await response.text()
                health.append(time.perf_counter() - started)

    poller = asyncio.create_task(poll_health())
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(submitter(session) for _ in range(clients)))
        wall = time.perf_counter() - started
    done.set()
    await poller
    return submits, health, wall


def report_sync(
    args: argparse.Namespace, round_trips: list[float], overheads: list[float], wall: float
) -> None:
    print(
        f"{args.requests} sync requests to /v1/{args.endpoint}, {args.clients} clients at once, {wall:.1f} s"
    )
    print(f"  throughput            {args.requests / wall:8.1f} requests/s")
    print(line("round trip", round_trips, WIDTH))
    print(line("API overhead", overheads, WIDTH) + f"   mean {statistics.mean(overheads) * MS:.2f} ms")
    print(
        "  (overhead = round trip - the request's own queue wait - its execution, as the server reports them)"
    )


def report_burst(args: argparse.Namespace, submits: list[float], health: list[float], wall: float) -> None:
    total = args.burst_clients * args.burst_requests
    print(
        f"{total} submissions to /v2/{args.endpoint}, {args.burst_clients} clients at once "
        f"({args.burst_requests} each), {wall:.1f} s; /health polled back to back meanwhile"
    )
    print(f"  submit throughput     {total / wall:8.1f} requests/s")
    print(line("submit", submits, WIDTH))
    polls = f"/health ({len(health):5d} polls)"
    print(line(polls, health, WIDTH) + f"   max {max(health) * MS:.2f} ms   (target p99 < 50 ms)")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--endpoint", default="solid-color")
    parser.add_argument("--scenario", choices=("all", "sync", "burst"), default="all")
    parser.add_argument("--burst-clients", type=int, default=100)
    parser.add_argument("--burst-requests", type=int, default=20, help="submissions per burst client")
    args = parser.parse_args()

    with served_engine(args.endpoint) as url:
        asyncio.run(drive(url, args.endpoint, args.clients, 100))  # warm the connections and caches
        if args.scenario in ("all", "sync"):
            report_sync(args, *asyncio.run(drive(url, args.endpoint, args.clients, args.requests)))
        if args.scenario in ("all", "burst"):
            report_burst(
                args, *asyncio.run(burst(url, args.endpoint, args.burst_clients, args.burst_requests))
            )


if __name__ == "__main__":
    main()
