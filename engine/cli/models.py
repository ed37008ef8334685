"""`engine make-test-models DIR`: tiny random checkpoints in the real layouts, for tests and demos."""

from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import global_options


def cmd_make_test_models(args: argparse.Namespace) -> int:
    from engine.diffusion.test_models import write_test_models  # torch: imported only when run

    for path in write_test_models(Path(args.directory)):
        print(path)
    print("these files hold RANDOM test weights: every image made with them is noise")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    make = commands.add_parser("make-test-models", help="write tiny random models in ComfyUI's folder layout")
    make.add_argument("directory")
    global_options.add_to_command(make, global_options.VERBOSE_ONLY)
    make.set_defaults(handler=cmd_make_test_models)
