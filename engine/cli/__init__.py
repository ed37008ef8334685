"""The `engine` command: serve the API, run a fleet's workers, run and inspect graphs, manage keys,
endpoints and test models.

Building the parser imports no command's implementation: each command module imports what it runs
(torch, diffusers, aiohttp) inside its handler, so `engine --help` and `engine keys add` start in a
fraction of a second instead of the seconds torch takes to import.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from engine import folders
from engine.cli import bench, endpoints, fleet, global_options, graphs, keys, models, serve, worker
from engine.cli.console import configure_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engine", description=__doc__.split("\n\n")[0])
    global_options.add_to_program(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    serve.add_commands(commands)
    worker.add_commands(commands)
    fleet.add_commands(commands)
    graphs.add_commands(commands)
    keys.add_commands(commands)
    endpoints.add_commands(commands)
    models.add_commands(commands)
    bench.add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.custom_nodes = [Path(d) for d in args.custom_nodes or ["custom_nodes"]]
    configure_logging(args.verbose)
    folders.configure(
        base_dir=args.base_dir,
        models_dir=args.models_dir,
        output_dir=getattr(args, "out", None),
        extra_model_paths=args.extra_model_paths,
    )
    return args.handler(args)
