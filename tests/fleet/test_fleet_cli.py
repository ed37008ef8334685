"""`engine worker` and `engine fleet status` refuse what cannot work with a message that says why,
before loading anything."""

from __future__ import annotations

import pytest

from engine.cli import main


@pytest.fixture(autouse=True)
def no_broker_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENGINE_BROKER", raising=False)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["worker"], "needs --broker"),
        (["fleet", "status"], "needs --broker"),
        (["worker", "--broker", "redis://127.0.0.1:1/0", "--device", "cuda:999"], "no such CUDA device"),
        (["fleet", "status", "--broker", "redis://127.0.0.1:1/0"], "cannot reach the broker"),
    ],
)
def test_what_cannot_run_is_refused_with_the_reason(argv: list[str], says: str) -> None:
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert says in str(refused.value)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["worker", "--broker", "http://127.0.0.1:6379"], "is not a Redis URL"),
        (["worker", "--broker", "redis://h:1/0", "--device", "gpu0"], "is not a device"),
        (["worker", "--broker", "redis://h:1/0", "--device", "cuda:-1"], "is not a device"),
        (["worker", "--broker", "redis://h:1/0", "--lease", "2"], "less than 5 seconds"),
        (["worker", "--broker", "redis://h:1/0", "--lease", "1e999"], "is not a duration"),
    ],
)
def test_bad_options_are_usage_errors(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2 and says in capsys.readouterr().err
