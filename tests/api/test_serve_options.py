"""`engine serve` takes the shared folder options after the command as well as before it."""

from __future__ import annotations

from pathlib import Path

from engine.cli import build_parser
from engine.cli.settings_args import settings_from


def test_folder_options_after_serve_set_the_same_settings_as_before_it(tmp_path: Path) -> None:
    options = [
        "--base-dir", str(tmp_path), "--models-dir", str(tmp_path / "weights"),
        "--data-dir", str(tmp_path / "state"), "--custom-nodes", str(tmp_path / "nodes"),
        "--extra-model-paths", str(tmp_path / "extra.yaml"),
    ]  # fmt: skip
    before = settings_from(build_parser().parse_args([*options, "serve", "--open-access"]))
    after = settings_from(build_parser().parse_args(["serve", "--open-access", *options]))
    assert after == before
    assert after.models_dir == tmp_path / "weights" and after.data_path == tmp_path / "state"
    assert after.custom_nodes_dirs == (tmp_path / "nodes",)
    assert after.extra_model_paths == (tmp_path / "extra.yaml",)


def test_an_option_after_serve_wins_over_the_same_option_before_it(tmp_path: Path) -> None:
    args = ["--models-dir", "/before", "serve", "--models-dir", str(tmp_path)]
    assert settings_from(build_parser().parse_args(args)).models_dir == tmp_path
