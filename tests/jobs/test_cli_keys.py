"""`engine keys` and `engine make-test-models` as an operator uses them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cli import main
from engine.diffusion.safetensors_file import read_header
from engine.jobs.redis_store import RedisStore
from engine.jobs.sqlite_store import SqliteStore
from engine.jobs.types import ApiKey

REPO = Path(__file__).resolve().parents[2]


def engine(tmp_path: Path, *args: str) -> int:
    return main(["--base-dir", str(tmp_path), *args])


def test_add_list_credit_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert engine(tmp_path, "keys", "add", "acme", "--credits", "5", "--rate", "30") == 0
    printed = capsys.readouterr().out.splitlines()
    secret = printed[-1]
    store = SqliteStore(tmp_path / "data" / "engine.sqlite3")
    key = store.authenticate(secret)
    assert key is not None and (key.name, key.balance, key.rate_per_minute) == ("acme", 5, 30)

    assert engine(tmp_path, "keys", "credit", key.id, "2.5") == 0
    assert store.key(key.id).balance == 7.5
    assert engine(tmp_path, "keys", "list") == 0
    listing = capsys.readouterr().out
    assert key.id in listing and "acme" in listing and secret not in listing

    assert engine(tmp_path, "keys", "revoke", key.id) == 0
    assert store.authenticate(secret) is None
    assert engine(tmp_path, "keys", "revoke", key.id) == 1


def test_add_an_admin_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert engine(tmp_path, "keys", "add", "ops", "--admin") == 0
    assert engine(tmp_path, "keys", "add", "client") == 0
    secrets = [line for line in capsys.readouterr().out.splitlines() if line.startswith("sk_")]
    store = SqliteStore(tmp_path / "data" / "engine.sqlite3")
    assert [store.authenticate(secret).admin for secret in secrets] == [True, False]
    assert engine(tmp_path, "keys", "list") == 0
    assert "admin" in capsys.readouterr().out


def test_keys_in_a_fleets_redis(tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """With --broker the keys live in Redis, where every API process of the fleet finds them; the
    embedded database is not touched."""
    assert engine(tmp_path, "keys", "add", "acme", "--credits", "5", "--broker", redis_url) == 0
    secret = capsys.readouterr().out.splitlines()[-1]

    async def authenticate() -> ApiKey | None:
        store = RedisStore(redis_url)
        try:
            return await store.authenticate(secret)
        finally:
            await store.close()

    key = asyncio.run(authenticate())
    assert key is not None and (key.name, key.balance) == ("acme", 5)
    assert not (tmp_path / "data" / "engine.sqlite3").exists()
    assert engine(tmp_path, "keys", "credit", key.id, "2.5", "--broker", redis_url) == 0
    assert engine(tmp_path, "keys", "list", "--broker", redis_url) == 0
    assert "7.5" in capsys.readouterr().out
    assert engine(tmp_path, "keys", "revoke", key.id, "--broker", redis_url) == 0
    assert asyncio.run(authenticate()) is None


def test_a_broker_that_is_not_a_redis_url_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        engine(tmp_path, "keys", "list", "--broker", "postgres://db/0")
    assert "is not a Redis URL" in capsys.readouterr().err


def test_make_test_models_writes_marked_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert engine(tmp_path, "make-test-models", str(tmp_path / "models")) == 0
    assert "RANDOM test weights" in capsys.readouterr().out
    for relative in (
        "checkpoints/aura_flow_0.3.safetensors",
        "diffusion_models/flux1-schnell.safetensors",
        "diffusion_models/flux1-dev.safetensors",
        "text_encoders/clip_l.safetensors",
        "text_encoders/t5xxl_fp16.safetensors",
        "vae/ae.safetensors",
    ):
        assert read_header(tmp_path / "models" / relative).holds_random_test_weights, relative


def test_key_options_are_accepted_after_the_command(tmp_path: Path, capsys) -> None:
    assert main(["keys", "add", "acme", "--base-dir", str(tmp_path), "--credits", "3"]) == 0
    secret = capsys.readouterr().out.splitlines()[-1]
    key = SqliteStore(tmp_path / "data" / "engine.sqlite3").authenticate(secret)
    assert key is not None and key.balance == 3
    assert main(["keys", "list", "--data-dir", str(tmp_path / "data")]) == 0
    assert key.id in capsys.readouterr().out


HEAVY_MODULES = ("torch", "diffusers", "transformers", "aiohttp")
IMPORTS_AFTER = """
import sys
from engine.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("imported:", *sorted(name for name in {heavy} if name in sys.modules))
"""


@pytest.mark.parametrize(
    "command", [["keys", "add", "acme"], ["keys", "list"], ["--help"], ["keys", "--help"]]
)
def test_key_commands_and_help_import_no_model_library(tmp_path: Path, command: list[str]) -> None:
    """They must answer at once: torch alone takes seconds to import."""
    script = IMPORTS_AFTER.format(heavy=HEAVY_MODULES)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script, "--base-dir", str(tmp_path), *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "imported:"
