"""Writing a numbered output file so that it appears whole or not at all.

A file written in place is visible, under its final name, while it is being written: a crash, a full
disk or an encoder error leaves a 0-byte or partial image that is listed and served as a result. So
the bytes go to a hidden temporary file in the same folder first, are flushed to the disk (a full disk
on a delayed-allocation filesystem shows at fsync, not at write), and the file is then hard-linked
under its final name: atomic, and refused if that name exists, so two jobs saving with the same prefix
at once never overwrite each other. Whatever happens, the temporary file is removed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMPORARY_SUFFIX = ".partial"


def write_numbered(
    folder: Path, name: str, counter: int, extension: str, write: Callable[[BinaryIO], object]
) -> tuple[Path, int]:
    """`write` the file, then place it as `{name}_{counter:05}_.{extension}` under the first free counter
    from `counter` on; (its path, the counter used)."""
    descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}_", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        while True:
            target = folder / f"{name}_{counter:05}_.{extension}"
            try:
                os.link(temporary, target)
                return target, counter
            except FileExistsError:
                counter += 1
    finally:
        os.unlink(temporary)
