"""Service settings from the command line (and ENGINE_* environment variables for the common ones)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    """A number with an optional unit; what is not one is refused with the units and an example."""
    match = _QUANTITY.fullmatch(text)
    if match is None or match.group(2).lower() not in units:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a {what}: give a non-negative number with an optional unit "
            f"({', '.join(unit for unit in units if unit)}), e.g. {example}"
        )
    return float(match.group(1)) * units[match.group(2).lower()]


def _size(text: str, example: str) -> int:
    return int(_quantity(text, SIZE_UNITS, "size", example))


def cache_size(text: str) -> int:
    """A byte count such as 2GiB, 512MiB or 0 (no caching), no more than the memory this process has."""
    size = _size(text, "2GiB")
    available = available_memory_bytes()
    if size > available:
        raise argparse.ArgumentTypeError(
            f"{text} is more than the memory this process may use ({available / 2**30:.1f} GiB); the cache "
            "holds node outputs in memory, so it must fit beside the models"
        )
    return size


def asset_size(text: str) -> int:
    """A byte count such as 100MiB or 2GB, at least one byte."""
    size = _size(text, "100MiB")
    if size < 1:
        raise argparse.ArgumentTypeError(f"{text} is less than one byte: no upload could be stored")
    return size


MAX_UPLOAD_CAP_BYTES = 2**30
"""An upload is held in memory while Pillow checks it; a gigabyte is already more than an image needs."""


def upload_size(text: str) -> int:
    """A byte count such as 50MiB for ComfyUI's image uploads, between 1 KiB and 1 GiB."""
    size = _size(text, "50MiB")
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


OPTIONAL_SETTINGS = {
    "host": "host",
    "port": "port",
    "public_url": "public_url",
    "test_models": "test_models",
    "cache_size": "cache_bytes",
    "retention": "retention_seconds",
    "max_asset_size": "max_asset_bytes",
    "max_upload_size": "max_upload_bytes",
}
"""Parsed option -> the Settings field it sets when given (else the Settings default stands); not every
command has every option."""
SWITCHES = {"open_access": "ENGINE_OPEN_ACCESS", "multi_user": "ENGINE_MULTI_USER"}
"""`engine serve`'s on/off flags, each also turned on by its variable."""


def settings_from(args: argparse.Namespace) -> Settings:
    base = Path(args.base_dir).resolve() if args.base_dir else Path.cwd()
    extra: dict[str, Any] = {
        setting: getattr(args, option)
        for option, setting in OPTIONAL_SETTINGS.items()
        if getattr(args, option, None) is not None
    }
    for switch, variable in SWITCHES.items():
        if hasattr(args, switch):
            extra[switch] = getattr(args, switch) or env_switch(variable)
    if getattr(args, "warmup", None) is not None:
        extra["warmup_endpoints"] = tuple(args.warmup)
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


def _add_quantity(
    parser: argparse.ArgumentParser,
    flag: str,
    parse: Callable[[str], float],
    metavar: str,
    help: str,
    default: str,
) -> None:
    """`--flag` with its ENGINE_ variable as the default; argparse parses a default given as text like a
    flag's value, so a variable out of bounds stops start-up with the same message a flag would get."""
    variable = "ENGINE_" + flag.removeprefix("--").replace("-", "_").upper()
    parser.add_argument(
        flag,
        type=parse,
        default=os.environ.get(variable),
        metavar=metavar,
        help=f"{help} (default {default}; env {variable})",
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
    _add_quantity(
        parser,
        "--cache-size",
        cache_size,
        "SIZE",
        "memory for node outputs kept between runs, e.g. 2GiB or 0 for none",
        "1/16 of memory, at most 4GiB",
    )
    _add_quantity(
        parser,
        "--retention",
        retention,
        "PERIOD",
        "how long finished jobs and their images are kept, e.g. 3600, 90m, 24h, 7d",
        "1h",
    )
    _add_quantity(
        parser,
        "--max-asset-size",
        asset_size,
        "SIZE",
        "largest Comfy API v2 asset upload, e.g. 100MiB or 2GB",
        "100MiB",
    )
    _add_quantity(
        parser,
        "--max-upload-size",
        upload_size,
        "SIZE",
        "largest image the editor may upload, e.g. 100MiB",
        "50MiB",
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
