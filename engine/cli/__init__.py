"""The `engine` command: serve the API, run and inspect graphs, manage keys and test models."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from engine import folders
from engine.cli import graphs, keys, models, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engine", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--custom-nodes",
        action="append",
        default=None,
        metavar="DIR",
        help="folder of custom node packages (default: ./custom_nodes); repeatable",
    )
    parser.add_argument(
        "--base-dir", metavar="DIR", help="folder holding models/, input/, output/, data/ (default: .)"
    )
    parser.add_argument(
        "--models-dir", metavar="DIR", help="ComfyUI-layout models folder (default: BASE/models)"
    )
    parser.add_argument(
        "--extra-model-paths",
        action="append",
        default=[],
        metavar="YAML",
        help="ComfyUI extra_model_paths.yaml naming more model folders; repeatable",
    )
    parser.add_argument(
        "--data-dir", metavar="DIR", help="job database, webhook secret, test models (default: BASE/data)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve.add_commands(commands)
    graphs.add_commands(commands)
    keys.add_commands(commands)
    models.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.custom_nodes = [Path(d) for d in args.custom_nodes or ["custom_nodes"]]
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    folders.configure(
        base_dir=args.base_dir,
        models_dir=args.models_dir,
        output_dir=getattr(args, "out", None),
        extra_model_paths=args.extra_model_paths,
    )
    return args.handler(args)
