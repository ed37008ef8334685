"""`engine bench`'s arguments: what it refuses, with argparse's usage error (exit 2) naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.cli import build_parser


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--runs", "0"], "--runs"),
        (["--runs", "-3"], "--runs"),
        (["--runs", "many"], "--runs"),
        (["--concurrent", "0"], "--concurrent"),
        (["--size", "huge"], "--size"),
        (["--endpoints", "../../etc/passwd"], "--endpoints"),
        (["--endpoints"], "--endpoints"),
        (["--throughput-endpoints", "flux-pro"], "--throughput-endpoints"),
        (["--time-budget", "soon"], "--time-budget"),
    ],
)
def test_bad_arguments_are_refused_naming_the_option(
    arguments: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["bench", *arguments])
    assert exit_info.value.code == 2
    assert named in capsys.readouterr().err


def test_defaults_leave_size_and_comparison_to_the_machine() -> None:
    args = build_parser().parse_args(["bench"])
    assert args.size is None and args.compare is None  # decided by CUDA's presence when run
    assert (args.runs, args.concurrent, args.endpoints) == (3, 8, None)
    chosen = build_parser().parse_args(
        ["bench", "--size", "small", "--no-compare", "--endpoints", "aura-flow"]
    )
    assert (chosen.size, chosen.compare, chosen.endpoints) == ("small", False, ["aura-flow"])


def test_full_size_without_a_gpu_is_refused_saying_what_runs_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer on a GPU machine
    args = build_parser().parse_args(["bench", "--size", "full", "--cache-dir", str(tmp_path / "cache")])
    with pytest.raises(SystemExit) as exit_info:
        args.handler(args)
    assert "needs a CUDA GPU" in str(exit_info.value) and "--size small" in str(exit_info.value)
    assert not (tmp_path / "cache").exists()  # nothing was written
