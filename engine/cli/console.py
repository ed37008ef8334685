"""The terminal the commands write to, and logging routed through it.

A progress bar redraws itself in place on stderr; a log line written to stderr behind its back lands in
the middle of the bar and is wiped by the next redraw. Sending log records through the same rich Console
as the bar lets rich print them above the bar instead.
"""

from __future__ import annotations

import logging

from rich.console import Console

err = Console(stderr=True, soft_wrap=True)
"""soft_wrap: a message stays one line, as a terminal wraps it, so a pipe or a log file gets it whole
(rich would otherwise break lines at the console width, 80 columns when it is not a terminal)."""
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class ConsoleLogHandler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            self.console.print(message, markup=False, highlight=False, emoji=False)
        except Exception:
            self.handleError(record)


def configure_logging(verbose: bool) -> None:
    handler = ConsoleLogHandler(err)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
