"""Service settings from the command line (and ENGINE_* environment variables for the common ones)."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.host_memory import available_memory_bytes
from engine.performance import PerformanceSettings
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


MAX_EVENT_STREAMS = 10_000
"""Each open stream holds a connection (a file descriptor) and a listener: more than this per key is
past what one process's descriptors allow anyway."""


def event_streams(text: str) -> int:
    """How many Comfy API v2 event streams one key may hold open: a whole number from 1 to 10000."""
    if not text.strip().isascii() or not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of streams, e.g. 16")
    count = int(text)
    if not 1 <= count <= MAX_EVENT_STREAMS:
        raise argparse.ArgumentTypeError(f"{text} is outside 1 to {MAX_EVENT_STREAMS} streams")
    return count


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


TEXT_ENCODER_OFFLOAD = ("auto", "always", "never")
MAX_STEP_CACHE_THRESHOLD = 2.0
"""The first block's residual rarely changes by more than its own size from one step to the next: a
threshold above twice that would skip nearly every step."""


def step_cache_threshold(text: str) -> float:
    """A relative change between 0 (step caching off) and 2."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give e.g. 0.1, or 0 for off") from None
    if not 0.0 <= value <= MAX_STEP_CACHE_THRESHOLD:
        raise argparse.ArgumentTypeError(
            f"{text} is outside 0 to {MAX_STEP_CACHE_THRESHOLD:g} (0.05-0.15 is the useful range)"
        )
    return value


def text_cache_size(text: str) -> int:
    """A byte count such as 256MiB or 0 (no caching), no more than the memory this process has."""
    size = int(_quantity(text, SIZE_UNITS, "size", "256MiB"))
    if size > available_memory_bytes():
        raise argparse.ArgumentTypeError(f"{text} is more than the memory this process may use")
    return size


def performance_from(args: argparse.Namespace) -> PerformanceSettings:
    """The speed switches `engine serve` was given; the defaults for commands that have none."""
    if not hasattr(args, "step_cache"):
        return PerformanceSettings()
    compile_switch = args.compile
    if compile_switch is None and os.environ.get("ENGINE_COMPILE", "").strip():
        compile_switch = env_switch("ENGINE_COMPILE")
    overlap_switch = args.overlap_jobs
    if overlap_switch is None and os.environ.get("ENGINE_OVERLAP_JOBS", "").strip():
        overlap_switch = env_switch("ENGINE_OVERLAP_JOBS")
    defaults = PerformanceSettings()
    if args.offload_text_encoders not in TEXT_ENCODER_OFFLOAD:
        raise SystemExit(
            f"ENGINE_OFFLOAD_TEXT_ENCODERS={args.offload_text_encoders!r} is not one of "
            + ", ".join(TEXT_ENCODER_OFFLOAD)
        )
    return PerformanceSettings(
        compile=compile_switch,
        cuda_graphs=not args.no_cuda_graphs,
        batch_cfg=not args.no_batch_cfg,
        text_cache_bytes=defaults.text_cache_bytes if args.text_cache_size is None else args.text_cache_size,
        step_cache_threshold=0.0 if args.step_cache is None else args.step_cache,
        offload_text_encoders=args.offload_text_encoders,
        sequential_offload=args.sequential_offload or env_switch("ENGINE_SEQUENTIAL_OFFLOAD"),
        overlap_jobs=overlap_switch,
    )


def add_performance_arguments(parser: argparse.ArgumentParser) -> None:
    speed = parser.add_argument_group("speed and memory (README: Performance)")
    speed.add_argument(
        "--compile",
        dest="compile",
        action="store_true",
        default=None,
        help="torch.compile the diffusion transformer (default: on with CUDA, off on the CPU; "
        "env ENGINE_COMPILE=1/0)",
    )
    speed.add_argument("--no-compile", dest="compile", action="store_false", help="never compile")
    speed.add_argument("--no-cuda-graphs", action="store_true", help="compile without replaying CUDA graphs")
    speed.add_argument(
        "--no-batch-cfg",
        action="store_true",
        help="run the positive and negative prompt as two forwards (less memory, slower)",
    )
    speed.add_argument(
        "--overlap-jobs",
        dest="overlap_jobs",
        action="store_true",
        default=None,
        help="decode and save one job's images and encode the next one's prompt while a job samples "
        "(default: on with CUDA, off on the CPU; env ENGINE_OVERLAP_JOBS=1/0)",
    )
    speed.add_argument(
        "--no-overlap-jobs", dest="overlap_jobs", action="store_false", help="run one job at a time"
    )
    speed.add_argument(
        "--text-cache-size",
        type=text_cache_size,
        default=os.environ.get("ENGINE_TEXT_CACHE_SIZE"),
        metavar="SIZE",
        help="memory for text-encoder outputs by prompt, e.g. 256MiB or 0 for none "
        "(default 256MiB; env ENGINE_TEXT_CACHE_SIZE)",
    )
    speed.add_argument(
        "--step-cache",
        type=step_cache_threshold,
        default=os.environ.get("ENGINE_STEP_CACHE"),
        metavar="THRESHOLD",
        help="first-block step caching: skip a step's later blocks when the first block's output moved "
        "less than this (e.g. 0.1; changes images; default 0, off; env ENGINE_STEP_CACHE)",
    )
    speed.add_argument(
        "--offload-text-encoders",
        choices=TEXT_ENCODER_OFFLOAD,
        default=os.environ.get("ENGINE_OFFLOAD_TEXT_ENCODERS", "auto"),
        help="move text encoders to host memory after encoding: auto (when the GPU is short of memory), "
        "always, never (env ENGINE_OFFLOAD_TEXT_ENCODERS)",
    )
    speed.add_argument(
        "--sequential-offload",
        action="store_true",
        help="last resort for a model that does not fit the GPU: keep its blocks in host memory and "
        "move one at a time (several times slower; env ENGINE_SEQUENTIAL_OFFLOAD=1)",
    )


OPTIONAL_SETTINGS = {
    "host": "host",
    "port": "port",
    "public_url": "public_url",
    "test_models": "test_models",
    "cache_size": "cache_bytes",
    "retention": "retention_seconds",
    "max_asset_size": "max_asset_bytes",
    "max_upload_size": "max_upload_bytes",
    "max_event_streams": "max_event_streams",
    "device": "device",
    "lease": "lease_seconds",
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
    if getattr(args, "broker", None):
        extra["broker"] = broker_url(args.broker)
    for name in ("tls_cert", "tls_key"):
        if getattr(args, name, None):
            extra[name] = Path(getattr(args, name)).resolve()
    return Settings(
        base_dir=base,
        performance=performance_from(args),
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
        "--max-event-streams",
        event_streams,
        "N",
        "most Comfy API v2 event streams one key may hold open; more get 429 too_many_streams",
        "16",
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
