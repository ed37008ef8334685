"""Suite-wide fixtures and the figures tests report at the end of a run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

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
