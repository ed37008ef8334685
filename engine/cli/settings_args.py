"""Service settings from the command line (and ENGINE_* environment variables for the common ones)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from engine.host_memory import available_memory_bytes
from engine.settings import LOCALHOST, Settings

SWITCH_ON = ("1", "true", "yes", "on")
SWITCH_OFF = ("0", "false", "no", "off", "")


def env_switch(name: str) -> bool:
    """An on/off ENGINE_* variable; a value that is neither stops start-up rather than being guessed at."""
    value = os.environ.get(name, "").strip().lower()
    if value not in SWITCH_ON + SWITCH_OFF:
        raise SystemExit(
            f"{name}={os.environ[name]!r} is not a switch: use 1, true, yes, on or 0, false, no, off"
        )
    return value in SWITCH_ON


SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_QUANTITY = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*")

MIN_RETENTION_SECONDS = 60
"""Expired jobs are deleted once a minute, so a shorter period would not be kept to; it also leaves a
client polling for its result no time to fetch it."""
MAX_RETENTION_SECONDS = 365 * 86400
"""The embedded store and the output folder grow with the retention period: results kept for longer
belong in an archive of their own."""


def _quantity(text: str, units: dict[str, int], what: str, example: str) -> float:
    match = _QUANTITY.fullmatch(text)
    if match is None or match.group(2).lower() not in units:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a {what}: give a non-negative number with an optional unit "
            f"({', '.join(unit for unit in units if unit)}), e.g. {example}"
        )
    return float(match.group(1)) * units[match.group(2).lower()]


def cache_size(text: str) -> int:
    """A byte count such as 2GiB, 512MiB or 0 (no caching), no more than the memory this process has."""
    size = int(_quantity(text, SIZE_UNITS, "size", "2GiB"))
    available = available_memory_bytes()
    if size > available:
        raise argparse.ArgumentTypeError(
            f"{text} is more than the memory this process may use ({available / 2**30:.1f} GiB); the cache "
            "holds node outputs in memory, so it must fit beside the models"
        )
    return size


def asset_size(text: str) -> int:
    """A byte count such as 100MiB or 2GB, at least one byte."""
    size = int(_quantity(text, SIZE_UNITS, "size", "100MiB"))
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text} is less than one byte: no upload could be stored")
    return size


MAX_UPLOAD_CAP_BYTES = 2**30
"""An upload is held in memory while Pillow checks it; a gigabyte is already more than an image needs."""


def upload_size(text: str) -> int:
    """A byte count such as 50MiB for ComfyUI's image uploads, between 1 KiB and 1 GiB."""
    size = int(_quantity(text, SIZE_UNITS, "size", "50MiB"))
    if not 1024 <= size <= MAX_UPLOAD_CAP_BYTES:
        raise argparse.ArgumentTypeError(f"{text} is outside 1KiB to 1GiB")
    return size


def retention(text: str) -> float:
    """A period such as 3600, 90m, 24h or 7d, between a minute and a year."""
    seconds = _quantity(text, DURATION_UNITS, "duration", "24h")
    if not MIN_RETENTION_SECONDS <= seconds <= MAX_RETENTION_SECONDS:
        raise argparse.ArgumentTypeError(
            f"{text} is outside {MIN_RETENTION_SECONDS} seconds to {MAX_RETENTION_SECONDS // 86400} days"
        )
    return seconds


BROKER_SCHEMES = ("redis://", "rediss://", "unix://")


def broker_url(text: str) -> str:
    """A Redis URL: redis://host:port/db, rediss:// (TLS) or unix:///path/to/socket."""
    if not text.startswith(BROKER_SCHEMES):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a Redis URL: give redis://HOST:PORT/DB, rediss://... or unix:///PATH"
        )
    return text


DEFAULT_BROKER_HELP = (
    "Redis holding the jobs, keys and queue of a fleet, e.g. redis://127.0.0.1:6379/0 "
    "(default: the embedded SQLite store; env ENGINE_BROKER)"
)
_DEVICE = re.compile(r"cpu|cuda(:[0-9]{1,3})?")


def device_name(text: str) -> str:
    """cpu, cuda or cuda:N."""
    if _DEVICE.fullmatch(text) is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: give cpu, cuda or cuda:N")
    return text


MIN_LEASE_SECONDS = 5.0
"""Two heartbeats and a margin: a shorter lease would hand a job to a second worker while its first
still runs it, whenever a beat comes a little late."""


def lease(text: str) -> float:
    """A period such as 30 or 2m, at least MIN_LEASE_SECONDS."""
    seconds = _quantity(text, DURATION_UNITS, "duration", "30")
    if seconds < MIN_LEASE_SECONDS:
        raise argparse.ArgumentTypeError(f"{text} is less than {MIN_LEASE_SECONDS:g} seconds")
    return seconds


def add_broker_argument(parser: argparse.ArgumentParser, help_text: str | None = None) -> None:
    parser.add_argument(
        "--broker",
        type=broker_url,
        default=os.environ.get("ENGINE_BROKER"),
        metavar="URL",
        help=f"{help_text} (env ENGINE_BROKER)" if help_text else DEFAULT_BROKER_HELP,
    )


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="folder for job outputs (default: BASE/output); in a fleet, one folder that every API and "
        "worker process reaches (a shared mount)",
    )


def settings_from(args: argparse.Namespace) -> Settings:
    base = Path(args.base_dir).resolve() if args.base_dir else Path.cwd()
    extra = {}
    for name in ("host", "port", "public_url"):
        if getattr(args, name, None) is not None:
            extra[name] = getattr(args, name)
    if hasattr(args, "open_access"):  # only `engine serve` has the switch
        extra["open_access"] = args.open_access or env_switch("ENGINE_OPEN_ACCESS")
    if getattr(args, "test_models", None) is not None:
        extra["test_models"] = args.test_models
    if getattr(args, "warmup", None) is not None:
        extra["warmup_endpoints"] = tuple(args.warmup)
    if getattr(args, "device", None) is not None:
        extra["device"] = args.device
    if getattr(args, "lease", None) is not None:
        extra["lease_seconds"] = args.lease
    if getattr(args, "cache_size", None) is not None:
        extra["cache_bytes"] = args.cache_size
    if getattr(args, "retention", None) is not None:
        extra["retention_seconds"] = args.retention
    if getattr(args, "max_asset_size", None) is not None:
        extra["max_asset_bytes"] = args.max_asset_size
    if getattr(args, "max_upload_size", None) is not None:
        extra["max_upload_bytes"] = args.max_upload_size
    if getattr(args, "broker", None):
        extra["broker"] = broker_url(args.broker)
    if hasattr(args, "multi_user"):
        extra["multi_user"] = args.multi_user or env_switch("ENGINE_MULTI_USER")
    for name in ("tls_cert", "tls_key"):
        if getattr(args, name, None):
            extra[name] = Path(getattr(args, name)).resolve()
    return Settings(
        base_dir=base,
        models_dir=Path(args.models_dir) if args.models_dir else None,
        extra_model_paths=tuple(Path(p) for p in args.extra_model_paths),
        data_dir=Path(args.data_dir) if args.data_dir else None,
        graphs_dir=Path(getattr(args, "graphs", None) or "graphs"),
        custom_nodes_dirs=tuple(Path(d) for d in args.custom_nodes or ["custom_nodes"]),
        allow_private_webhooks=bool(getattr(args, "allow_private_webhooks", False)),
        **extra,
    )


def add_service_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host", default=os.environ.get("ENGINE_HOST"), help=f"address to bind (default {LOCALHOST})"
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("ENGINE_PORT", "8188")), help="default 8188"
    )
    parser.add_argument(
        "--public-url", default=os.environ.get("ENGINE_PUBLIC_URL"), help="base of absolute URLs"
    )
    parser.add_argument("--graphs", metavar="DIR", help="endpoint templates (default: ./graphs)")
    parser.add_argument(
        "--cache-size",
        type=cache_size,
        default=os.environ.get("ENGINE_CACHE_SIZE"),
        metavar="SIZE",
        help="memory for node outputs kept between runs, e.g. 2GiB or 0 for none "
        "(default: 1/16 of memory, at most 4GiB; env ENGINE_CACHE_SIZE)",
    )
    parser.add_argument(
        "--retention",
        type=retention,
        default=os.environ.get("ENGINE_RETENTION"),
        metavar="PERIOD",
        help="how long finished jobs and their images are kept, e.g. 3600, 90m, 24h, 7d "
        "(default 1h; env ENGINE_RETENTION)",
    )
    parser.add_argument(
        "--max-asset-size",
        type=asset_size,
        default=os.environ.get("ENGINE_MAX_ASSET_SIZE"),
        metavar="SIZE",
        help="largest Comfy API v2 asset upload, e.g. 100MiB or 2GB (default 100MiB; "
        "env ENGINE_MAX_ASSET_SIZE)",
    )
    parser.add_argument(
        "--max-upload-size",
        type=upload_size,
        default=os.environ.get("ENGINE_MAX_UPLOAD_SIZE"),
        metavar="SIZE",
        help="largest image the editor may upload, e.g. 100MiB (default 50MiB; env ENGINE_MAX_UPLOAD_SIZE)",
    )
    parser.add_argument(
        "--multi-user",
        action="store_true",
        help="ComfyUI's multi-user mode: each editor user (comfy-user header) has its own settings and "
        "workflows (env ENGINE_MULTI_USER=1)",
    )


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tls-cert",
        default=os.environ.get("ENGINE_TLS_CERT"),
        metavar="PEM",
        help="serve HTTPS with this certificate (chain), with --tls-key (env ENGINE_TLS_CERT); "
        "fal's Python client only speaks https",
    )
    parser.add_argument(
        "--tls-key",
        default=os.environ.get("ENGINE_TLS_KEY"),
        metavar="PEM",
        help="the certificate's unencrypted private key (env ENGINE_TLS_KEY)",
    )
