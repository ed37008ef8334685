"""Reading a JSON file someone wrote by hand (an endpoint template, a graph), with a message that says
which file and what is wrong with it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def read_json_file(path: Path, error: Callable[[str], Exception]) -> Any:
    """The file's JSON; a file that cannot be read or is not JSON raises `error(message)` naming the file,
    as the caller's own error type (start-up and the command line report those as they are)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: not a JSON file ({exc})") from exc
