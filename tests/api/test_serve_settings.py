"""`engine serve`'s output cache, retention and asset size settings: flags, ENGINE_* variables, bounds,
defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import host_memory
from engine.cli import build_parser
from engine.cli.settings_args import settings_from
from engine.settings import Settings

GIB = 2**30


def serve_settings(*flags: str) -> Settings:
    return settings_from(build_parser().parse_args(["--custom-nodes", "custom_nodes", "serve", *flags]))


def mem_total() -> int:
    """The machine's RAM as the kernel reports it."""
    with open("/proc/meminfo") as meminfo:
        label, kib, _ = meminfo.readline().split()
    assert label == "MemTotal:"
    return int(kib) * 1024


def test_flags_set_the_cache_size_and_the_retention_period() -> None:
    settings = serve_settings("--cache-size", "512MiB", "--retention", "24h")
    assert settings.cache_bytes == 512 * 2**20 and settings.retention_seconds == 86400
    assert serve_settings("--cache-size", "0", "--retention", "3600").cache_bytes == 0


def test_environment_variables_set_them_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENGINE_CACHE_SIZE", "1GB")
    monkeypatch.setenv("ENGINE_RETENTION", "90m")
    settings = serve_settings()
    assert settings.cache_bytes == 10**9 and settings.retention_seconds == 5400
    assert serve_settings("--cache-size", "2MiB").cache_bytes == 2 * 2**20  # a flag beats the variable


def test_the_asset_upload_limit_comes_from_a_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve_settings().max_asset_bytes == 100 * 2**20  # Comfy API v2's ~100 MB single-request upload
    assert serve_settings("--max-asset-size", "2GB").max_asset_bytes == 2 * 10**9
    monkeypatch.setenv("ENGINE_MAX_ASSET_SIZE", "5MiB")
    assert serve_settings().max_asset_bytes == 5 * 2**20


def test_upload_size_and_multi_user_come_from_flags_or_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert serve_settings().max_upload_bytes == 50 * 2**20 and serve_settings().multi_user is False
    flagged = serve_settings("--max-upload-size", "100MiB", "--multi-user")
    assert flagged.max_upload_bytes == 100 * 2**20 and flagged.multi_user is True
    monkeypatch.setenv("ENGINE_MAX_UPLOAD_SIZE", "10MB")
    monkeypatch.setenv("ENGINE_MULTI_USER", "yes")
    from_environment = serve_settings()
    assert from_environment.max_upload_bytes == 10**7 and from_environment.multi_user is True


def test_the_broker_comes_from_a_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve_settings().broker is None  # the embedded SQLite store by default
    assert serve_settings("--broker", "redis://10.0.0.5:6379/2").broker == "redis://10.0.0.5:6379/2"
    monkeypatch.setenv("ENGINE_BROKER", "rediss://cache.internal:6380/0")
    assert serve_settings().broker == "rediss://cache.internal:6380/0"


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--cache-size", "-1", "not a size: give a non-negative number"),
        ("--cache-size", "lots", "not a size"),
        ("--cache-size", "4 parsecs", "not a size"),
        ("--cache-size", "1000TiB", "is more than the memory this process may use"),
        ("--retention", "-5", "not a duration"),
        ("--retention", "10", "outside 60 seconds to 365 days"),
        ("--retention", "400d", "outside 60 seconds to 365 days"),
        ("--max-asset-size", "0", "less than one byte"),
        ("--max-asset-size", "big", "not a size"),
        ("--max-upload-size", "big", "not a size"),
        ("--max-upload-size", "2GiB", "outside 1KiB to 1GiB"),
        ("--max-upload-size", "10", "outside 1KiB to 1GiB"),
        ("--broker", "localhost:6379", "not a Redis URL"),
        ("--broker", "http://redis/0", "not a Redis URL"),
    ],
)
def test_a_bad_value_is_a_clear_command_line_error(
    flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        serve_settings(f"{flag}={value}")
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {flag}:" in error and says in error


def test_the_default_cache_is_a_sixteenth_of_memory_at_most_4_gib(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(host_memory, "CGROUP_ROOT", tmp_path)  # no container limit
    assert Settings().cache_bytes == min(4 * GIB, mem_total() // 16)
    (tmp_path / "memory.max").write_text("2147483648\n")  # a container limited to 2 GiB (cgroup v2)
    assert Settings().cache_bytes == 128 * 2**20
    (tmp_path / "memory.max").write_text("max\n")
    assert Settings().cache_bytes == min(4 * GIB, mem_total() // 16)
    (tmp_path / "memory.max").unlink()
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(str(3 * GIB))  # cgroup v1
    assert Settings().cache_bytes == 192 * 2**20
