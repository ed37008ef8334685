"""Options every command shares (folders, custom nodes, verbosity), accepted before or after the command.

`engine --models-dir X serve` and `engine serve --models-dir X` mean the same: users type options where
they think of them, and argparse alone accepts an option only on the parser that declares it. So each
command declares the shared options that apply to it again, with no defaults of its own (a default there
would overwrite the value given before the command). Given in both places, the value after the command
wins; for a repeatable option, the values after the command replace those before it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

_OPTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "verbose": (
        ("-v", "--verbose"),
        {"action": "store_true", "help": "show tracebacks and debug logs"},
    ),
    "custom_nodes": (
        ("--custom-nodes",),
        {
            "action": "append",
            "metavar": "DIR",
            "help": "folder of custom node packages (default: ./custom_nodes); repeatable",
        },
    ),
    "base_dir": (
        ("--base-dir",),
        {"metavar": "DIR", "help": "folder holding models/, input/, output/, data/ (default: .)"},
    ),
    "models_dir": (
        ("--models-dir",),
        {"metavar": "DIR", "help": "ComfyUI-layout models folder (default: BASE/models)"},
    ),
    "extra_model_paths": (
        ("--extra-model-paths",),
        {
            "action": "append",
            "metavar": "YAML",
            "help": "ComfyUI extra_model_paths.yaml naming more model folders; repeatable",
        },
    ),
    "data_dir": (
        ("--data-dir",),
        {"metavar": "DIR", "help": "job database, webhook secret, test models (default: BASE/data)"},
    ),
}

ALL = tuple(_OPTIONS)
GRAPHS = ("verbose", "custom_nodes", "base_dir", "models_dir", "extra_model_paths")
"""What running, validating and listing nodes reads: node packages and model folders."""
KEYS = ("verbose", "base_dir", "data_dir")
"""What the key commands read: the database's folder."""
VERBOSE_ONLY = ("verbose",)

_DEFAULTS: dict[str, Any] = {"verbose": False, "extra_model_paths": []}
"""Defaults other than None (a missing --custom-nodes means ./custom_nodes, decided by the caller)."""


def add_to_program(parser: argparse.ArgumentParser) -> None:
    """The options before the command, with their defaults."""
    for name, (flags, spec) in _OPTIONS.items():
        parser.add_argument(*flags, dest=name, default=_DEFAULTS.get(name), **spec)


def add_to_command(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """The options that apply to this command, accepted after it."""
    group = parser.add_argument_group("options also accepted before the command")
    for name in names:
        flags, spec = _OPTIONS[name]
        group.add_argument(*flags, dest=name, default=argparse.SUPPRESS, **spec)
