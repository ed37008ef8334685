"""Service settings from the command line (and ENGINE_* environment variables for the common ones)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

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
    return Settings(
        base_dir=base,
        models_dir=Path(args.models_dir) if args.models_dir else None,
        extra_model_paths=tuple(Path(p) for p in args.extra_model_paths),
        data_dir=Path(args.data_dir) if args.data_dir else None,
        graphs_dir=Path(getattr(args, "graphs", None) or "graphs"),
        custom_nodes_dirs=tuple(args.custom_nodes),
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
