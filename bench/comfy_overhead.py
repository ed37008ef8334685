"""ComfyUI API overhead: POST /prompt -> execution_success on the websocket, beside the Segmind sync API.

    .venv/bin/python bench/comfy_overhead.py [--requests 500] [--endpoint solid-color]

Starts `engine serve` in its own process (open mode, no models needed) and drives it from this one
with aiohttp, one request at a time, so each latency is the path through the server and nothing else:

- ComfyUI: a websocket client as ComfyUI's websockets_api_example.py opens it, then for each request
  POST /prompt of a model-free graph (PrimitiveString -> PreviewAny, the string differing each time so
  nothing comes from the cache) and wait for its `execution_success`, then for `executing` null (the
  history is stored). Overhead is the round trip less the run itself (execution_success's timestamp
  less execution_start's, whole milliseconds).
- Segmind: POST /v1/<endpoint> (the sync API, an 8x8 PNG of solid-color), less the server's own
  x-queue-time and x-inference-time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
from harness import MS, line, served_engine, timed_sync_request


def graph(text: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "PrimitiveString", "inputs": {"value": text}},
        "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}},
    }


async def comfy(url: str, requests: int) -> tuple[list[float], list[float], list[float]]:
    """(to execution_success, to executing null, overhead) per request, in seconds."""
    client_id = uuid.uuid4().hex
    to_success: list[float] = []
    to_done: list[float] = []
    overheads: list[float] = []
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}") as socket_,
    ):
        await socket_.receive_json()  # status
        for index in range(requests):
            started = time.perf_counter()
            body = {"prompt": graph(f"run {index} {uuid.uuid4()}"), "client_id": client_id}
            async with session.post(f"{url}/prompt", json=body) as response:
                assert response.status == 200, await response.text()
                prompt_id = (await response.json())["prompt_id"]
            run_started = 0
            while True:
                message = await socket_.receive()
                if message.type != aiohttp.WSMsgType.TEXT:
                    continue
                kind, data = json.loads(message.data).values()
                if data.get("prompt_id") != prompt_id:
                    continue
                if kind == "execution_start":
                    run_started = data["timestamp"]
                elif kind == "execution_success":
                    elapsed = time.perf_counter() - started
                    to_success.append(elapsed)
                    overheads.append(elapsed - (data["timestamp"] - run_started) / MS)
                elif kind == "executing" and data["node"] is None:
                    to_done.append(time.perf_counter() - started)
                    break
    return to_success, to_done, overheads


async def segmind(url: str, endpoint: str, requests: int) -> tuple[list[float], list[float]]:
    """(round trip, overhead) per request, in seconds."""
    round_trips: list[float] = []
    overheads: list[float] = []
    async with aiohttp.ClientSession() as session:
        for _ in range(requests):
            round_trip, overhead = await timed_sync_request(session, url, endpoint)
            round_trips.append(round_trip)
            overheads.append(overhead)
    return round_trips, overheads


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--endpoint", default="solid-color")
    args = parser.parse_args()

    with served_engine(args.endpoint) as url:
        asyncio.run(comfy(url, 20))  # warm the connections and caches
        asyncio.run(segmind(url, args.endpoint, 20))
        to_success, to_done, comfy_overhead = asyncio.run(comfy(url, args.requests))
        round_trips, segmind_overhead = asyncio.run(segmind(url, args.endpoint, args.requests))

    print(f"{args.requests} requests each, one at a time")
    print("ComfyUI API: POST /prompt (PrimitiveString -> PreviewAny), websocket")
    print(line("to execution_success", to_success))
    print(line("to executing null (history stored)", to_done))
    print(line("overhead (less the run)", comfy_overhead))
    print(f"Segmind sync API: POST /v1/{args.endpoint} (8x8 PNG)")
    print(line("round trip", round_trips))
    print(line("overhead (less queue and run)", segmind_overhead))


if __name__ == "__main__":
    main()
