"""`engine fleet status --broker redis://…`: the fleet as its broker sees it.

Workers (their device, resident models, current job, the endpoints whose warm-up failed on them, last
heartbeat) come from the worker registry, queue depths per endpoint from the job store; both are read
from Redis, so this runs anywhere that reaches it, without loading nodes or models.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from engine.cli import global_options
from engine.cli.settings_args import add_broker_argument
from engine.jobs.fleet import WorkerInfo, WorkerRegistry
from engine.jobs.store import StoreUnavailable


async def _read(broker: str) -> tuple[list[WorkerInfo], dict[str, int]]:
    from engine.jobs.redis_store import RedisStore

    registry, store = WorkerRegistry(broker), RedisStore(broker)
    try:
        return await registry.workers(), await store.queue_depths()
    finally:
        await registry.close()
        await store.close()


def status_json(workers: list[WorkerInfo], depths: dict[str, int]) -> dict[str, Any]:
    return {
        "workers": [worker.to_json() for worker in workers],
        "queues": depths,
        "queued": sum(depths.values()),
    }


def _warm_up(worker: WorkerInfo) -> str:
    if worker.warming_up:
        return "(warming up)"
    return "\n".join(f"{name}: {why}" for name, why in worker.warmup_failed.items()) or "none"


def cmd_status(args: argparse.Namespace) -> int:
    if args.broker is None:
        raise SystemExit("engine fleet status needs --broker redis://HOST:PORT/DB (or ENGINE_BROKER)")
    try:
        workers, depths = asyncio.run(_read(args.broker))
    except (OSError, RedisError, StoreUnavailable) as exc:
        raise SystemExit(f"cannot reach the broker at {args.broker}: {exc}") from None
    if args.json:
        print(json.dumps(status_json(workers, depths), indent=2))
        return 0
    console = Console()
    columns = ("worker", "device", "models loaded", "current job", "jobs done", "warm-up failed", "last beat")
    table = Table(*columns)
    now = time.time()
    for worker in workers:
        job = f"{worker.current_job} ({worker.current_endpoint})" if worker.current_job else "idle"
        if len(worker.jobs) > 1:
            job += f" and {', '.join(worker.jobs[1:])}"
        table.add_row(
            worker.id,
            worker.device,
            ", ".join(worker.models) or "none",
            job,
            str(worker.jobs_done),
            _warm_up(worker),
            f"{max(0.0, now - worker.last_beat):.1f}s ago",
        )
    console.print(table if workers else "no workers alive")
    queues = Table("endpoint", "queued")
    for endpoint, depth in sorted(depths.items()):
        queues.add_row(endpoint, str(depth))
    console.print(queues if depths else "no jobs queued")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    fleet = commands.add_parser("fleet", help="look at a fleet of API and worker processes")
    actions = fleet.add_subparsers(dest="fleet_command", required=True)
    status = actions.add_parser("status", help="workers, their devices, models and jobs; queue depths")
    add_broker_argument(status, "the fleet's Redis")
    status.add_argument("--json", action="store_true", help="print JSON instead of tables")
    global_options.add_to_command(status, global_options.VERBOSE_ONLY)
    status.set_defaults(handler=cmd_status)
