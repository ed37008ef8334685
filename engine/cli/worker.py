"""`engine worker --broker redis://… --device cuda:N`: one worker of a fleet, one per GPU.

It loads the node packages, endpoints and models as `engine serve` does, warms up, then claims jobs from
the broker, runs them on its device, beats in the worker registry and publishes every update for the
API processes to pass on. It serves no API; with `--metrics-port` it serves its own /metrics and
/health (what it ran, its memory) for Prometheus and a supervisor. SIGTERM or Ctrl-C stop it: the job it
is running goes back to the queue for another worker.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from engine.cli import global_options
from engine.cli.settings_args import (
    add_broker_argument,
    add_output_argument,
    add_performance_arguments,
    cache_size,
    device_name,
    lease,
    settings_from,
)
from engine.settings import LOCALHOST, Settings

log = logging.getLogger("engine.worker")


def cmd_worker(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.broker is None:
        raise SystemExit("engine worker needs --broker redis://HOST:PORT/DB (or ENGINE_BROKER)")
    if settings.device is not None and settings.device.startswith("cuda"):
        import torch

        index = int(settings.device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise SystemExit(f"--device {settings.device}: this machine has no such CUDA device")
    asyncio.run(_work(settings, args.metrics_port))
    return 0


async def _work(settings: Settings, metrics_port: int | None) -> None:
    from aiohttp import web  # imported here, as is torch through the service: see engine.cli

    from engine.api.errors import json_response
    from engine.service import Service

    service = Service(settings, role="worker")
    for report in service.package_reports:
        if not report.ok:
            log.error("custom node package %s was skipped (it failed to load)", report.name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await service.start()
    log.info(
        "worker %s on %s, taking jobs from %s", service.worker_id, service.models.device, settings.broker
    )
    runner: web.AppRunner | None = None
    if metrics_port is not None:

        async def metrics(_: web.Request) -> web.Response:
            body = await service.render_metrics()
            return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

        async def health(_: web.Request) -> web.Response:
            worker = service.health()
            ok = worker is None or worker.ok
            body = {"status": "ok" if ok else "unhealthy", "worker": service.worker_info().to_json()}
            return json_response(body, status=200 if ok else 503)

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        app.router.add_get("/health", health)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, settings.host or LOCALHOST, metrics_port).start()
        log.info("metrics on http://%s:%d/metrics", settings.host or LOCALHOST, metrics_port)
    try:
        await stop.wait()
    finally:
        log.info("stopping: the running job, if any, goes back to the queue")
        if runner is not None:
            await runner.cleanup()
        await service.stop()


def add_commands(commands: argparse._SubParsersAction) -> None:
    worker = commands.add_parser("worker", help="run one worker of a fleet (jobs from --broker)")
    add_broker_argument(worker, "the fleet's Redis, whose queued jobs this worker runs")
    worker.add_argument(
        "--device",
        type=device_name,
        help="where graphs run: cpu, cuda or cuda:N (default: the first GPU, else the CPU)",
    )
    worker.add_argument(
        "--lease",
        type=lease,
        metavar="SECONDS",
        help="how long another worker's running job may go without a heartbeat before this worker takes "
        "it over (default 30; at least 5)",
    )
    worker.add_argument(
        "--metrics-port", type=int, metavar="PORT", help="serve this worker's /metrics and /health here"
    )
    worker.add_argument("--host", help="address of the metrics port (default 127.0.0.1)")
    worker.add_argument("--graphs", metavar="DIR", help="endpoint templates (default: ./graphs)")
    add_output_argument(worker)
    worker.add_argument(
        "--cache-size", type=cache_size, metavar="SIZE", help="memory for node outputs kept between runs"
    )
    worker.add_argument(
        "--warmup",
        nargs="*",
        metavar="ENDPOINT",
        help="endpoints run once before taking jobs (default: all available)",
    )
    worker.add_argument(
        "--test-models",
        dest="test_models",
        action="store_true",
        default=None,
        help="serve tiny random test models even if real weights exist",
    )
    worker.add_argument(
        "--no-test-models", dest="test_models", action="store_false", help="never write or serve test models"
    )
    add_performance_arguments(worker)
    global_options.add_to_command(worker, global_options.ALL)
    worker.set_defaults(handler=cmd_worker, port=None, public_url=None)
