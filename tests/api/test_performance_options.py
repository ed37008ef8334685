"""`engine serve`'s speed and memory switches reach the model manager's PerformanceSettings."""

from __future__ import annotations

import pytest

from engine.cli import build_parser
from engine.cli.settings_args import settings_from
from engine.performance import PerformanceSettings


def parsed(*options: str) -> PerformanceSettings:
    return settings_from(build_parser().parse_args(["serve", "--open-access", *options])).performance


def test_without_switches_serve_runs_with_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ENGINE_COMPILE",
        "ENGINE_STEP_CACHE",
        "ENGINE_TEXT_CACHE_SIZE",
        "ENGINE_SEQUENTIAL_OFFLOAD",
        "ENGINE_OVERLAP_JOBS",
    ):
        monkeypatch.delenv(name, raising=False)
    assert parsed() == PerformanceSettings()
    assert PerformanceSettings().compiles("cuda") and not PerformanceSettings().compiles("cpu")
    assert PerformanceSettings().step_cache_threshold == 0.0  # lossy: off unless asked for
    assert PerformanceSettings().overlaps("cuda") and not PerformanceSettings().overlaps("cpu")


def test_each_switch_sets_its_setting() -> None:
    performance = parsed(
        "--compile", "--no-cuda-graphs", "--no-batch-cfg", "--text-cache-size", "64MiB",
        "--step-cache", "0.1", "--offload-text-encoders", "always", "--sequential-offload",
        "--overlap-jobs",
    )  # fmt: skip
    assert performance == PerformanceSettings(
        compile=True,
        cuda_graphs=False,
        batch_cfg=False,
        text_cache_bytes=64 * 2**20,
        step_cache_threshold=0.1,
        offload_text_encoders="always",
        sequential_offload=True,
        overlap_jobs=True,
    )
    assert parsed("--no-compile").compile is False
    assert parsed("--no-overlap-jobs").overlap_jobs is False


def test_environment_variables_set_them_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_COMPILE", "0")
    monkeypatch.setenv("ENGINE_STEP_CACHE", "0.08")
    monkeypatch.setenv("ENGINE_SEQUENTIAL_OFFLOAD", "yes")
    monkeypatch.setenv("ENGINE_OVERLAP_JOBS", "off")
    performance = parsed()
    assert (
        performance.compile,
        performance.step_cache_threshold,
        performance.sequential_offload,
        performance.overlap_jobs,
    ) == (False, 0.08, True, False)
    assert parsed("--compile").compile is True
    assert parsed("--overlap-jobs").overlap_jobs is True


@pytest.mark.parametrize(
    "options",
    [
        ["--step-cache", "-0.1"],
        ["--step-cache", "1e400"],
        ["--step-cache", "nan"],
        ["--step-cache", "fast"],
        ["--text-cache-size", "9999TiB"],
        ["--text-cache-size", "../1GiB"],
        ["--offload-text-encoders", "sometimes"],
    ],
)
def test_bad_values_stop_start_up_naming_the_bound(
    options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parsed(*options)
    assert options[0] in capsys.readouterr().err


def test_a_bad_offload_policy_in_the_environment_stops_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_OFFLOAD_TEXT_ENCODERS", "sometimes")
    with pytest.raises(SystemExit, match="ENGINE_OFFLOAD_TEXT_ENCODERS='sometimes'"):
        parsed()
