"""`engine serve`: the HTTP service on its embedded defaults (SQLite, local files, one in-process worker),
or with `--broker` one of a fleet's API processes (no worker: `engine worker` processes run the jobs)."""

from __future__ import annotations

import argparse
import logging

from engine.cli import global_options
from engine.cli.settings_args import (
    add_broker_argument,
    add_output_argument,
    add_performance_arguments,
    add_service_arguments,
    add_tls_arguments,
    settings_from,
)
from engine.settings import LOCALHOST

log = logging.getLogger("engine.serve")


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web  # imported here, as is torch through the service: see engine.cli

    from engine.api.app import create_app
    from engine.api.listen import TlsError, bind, is_wildcard, socket_url, tls_context
    from engine.service import Service

    settings = settings_from(args)
    try:
        ssl_context = tls_context(settings.tls_cert, settings.tls_key)
    except TlsError as exc:
        raise SystemExit(f"cannot serve HTTPS: {exc}") from None
    service = Service(settings, role="api" if settings.broker else "embedded")
    if settings.broker:
        log.info("an API process of the fleet at %s: worker processes run the jobs", settings.broker)
    host = settings.host
    if settings.open_access:
        if host != LOCALHOST:
            log.warning("--open-access: binding to %s only (not %s)", LOCALHOST, host)
        host = LOCALHOST
        log.warning(
            "OPEN ACCESS (--open-access): no API key is asked for; anyone on this machine can call the "
            "API and read every job. Restart without it, after `engine keys add NAME`, to require keys."
        )
    elif not service.keys.has_keys():
        log.warning(
            "no API keys exist: every request will be refused (401) until one is created with "
            "`engine keys add NAME` (or restart with --open-access for local use without keys)"
        )
    else:
        log.info("API keys are required")
    requeued, failed = service.recovered
    if requeued or failed:
        log.info("recovered from an earlier stop: %d jobs queued again, %d failed", requeued, failed)
    for report in service.package_reports:
        if not report.ok:
            log.error("custom node package %s was skipped (it failed to load)", report.name)
    available = [name for name, endpoint in service.endpoints.items() if endpoint.unavailable is None]
    log.info("endpoints: %s", ", ".join(available) or "none")
    for name, endpoint in service.endpoints.items():
        if endpoint.unavailable is not None:
            log.warning("endpoint %s is unavailable: %s", name, endpoint.unavailable)
    log.info("webhooks are signed with the secret in %s", settings.data_path / "webhook_secret")
    try:
        sock = bind(host, settings.port)
    except OSError as exc:
        raise SystemExit(f"cannot listen on {host}:{settings.port}: {exc.strerror or exc}") from None
    listen_url = socket_url(sock, tls=ssl_context is not None)
    if settings.public_url is None and is_wildcard(sock):
        log.warning(
            "listening on every interface without --public-url: response URLs will say %s, which remote "
            "clients cannot reach; pass --public-url with the address clients use",
            listen_url,
        )
    log.info("listening on %s; response URLs start with %s", listen_url, settings.public_url or listen_url)
    web.run_app(create_app(service, listen_url), sock=sock, ssl_context=ssl_context, print=lambda _: None)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the HTTP service")
    add_service_arguments(serve)
    add_tls_arguments(serve)
    add_output_argument(serve)
    add_broker_argument(
        serve,
        "serve as one of a fleet's API processes, with no worker: jobs, queues and updates go through "
        "this Redis, and `engine worker` processes run the jobs",
    )
    add_performance_arguments(serve)
    global_options.add_to_command(serve, global_options.ALL)
    serve.add_argument(
        "--test-models",
        dest="test_models",
        action="store_true",
        default=None,
        help="serve tiny random test models even if real weights exist",
    )
    serve.add_argument(
        "--no-test-models", dest="test_models", action="store_false", help="never write or serve test models"
    )
    serve.add_argument(
        "--warmup",
        nargs="*",
        metavar="ENDPOINT",
        help="endpoints run once before /ready turns true (default: all available)",
    )
    serve.add_argument(
        "--open-access",
        action="store_true",
        default=None,
        help="serve without API keys, on localhost only (development; also ENGINE_OPEN_ACCESS=1)",
    )
    serve.add_argument(
        "--allow-private-webhooks",
        action="store_true",
        help="let webhooks reach private and loopback addresses (development only)",
    )
    serve.set_defaults(handler=cmd_serve)
