"""Suite-wide fixtures and the figures tests report at the end of a run."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.redis_server import RedisServer

_report: list[str] = []


@pytest.fixture
def report() -> Callable[[str], None]:
    """Lets a test put a line (a count, a measurement) into the run's closing summary."""
    return _report.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _report:
        terminalreporter.section("reported by tests")
        for line in _report:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_session: RedisServer) -> str:
    """The URL of a real, empty redis-server."""
    redis_session.flush()
    return redis_session.url
