"""What a client may call its asset: the placement path (`file_path`) and tags, checked and normalised.

`file_path` is only ever a label (blobs are stored by hash), but it travels on: into listings, into the
name a downloaded file gets, and into workflows. So it must read as a relative path that stays where it
is put: no absolute path, drive, `..` segment or control character, whichever separator the client used.
"""

from __future__ import annotations

import unicodedata

from engine.folders import PathEscapeError, relative_name

MAX_FILE_PATH_CHARS = 1024
MAX_SEGMENT_CHARS = 255
MAX_TAGS = 32
MAX_TAG_CHARS = 128


def _has_control(text: str) -> bool:
    return any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in text)


def clean_file_path(text: str) -> str:
    """The path in forward-slash form without empty or `.` segments; ValueError says what is wrong."""
    if not text.strip():
        raise ValueError("file_path is empty")
    if len(text) > MAX_FILE_PATH_CHARS:
        raise ValueError(f"file_path is {len(text)} characters; the most is {MAX_FILE_PATH_CHARS}")
    if _has_control(text):
        raise ValueError("file_path holds a control character")
    try:
        path = relative_name(text)
    except PathEscapeError as exc:
        raise ValueError(f"file_path {text!r} must be a relative path without '..' segments") from exc
    if any(len(part) > MAX_SEGMENT_CHARS for part in path.parts):
        raise ValueError(f"a segment of file_path is longer than {MAX_SEGMENT_CHARS} characters")
    return path.as_posix()


def clean_tags(values: list[object]) -> tuple[str, ...]:
    """Distinct tags, sorted (so two lists of the same tags name the same set)."""
    if len(values) > MAX_TAGS:
        raise ValueError(f"{len(values)} tags given; the most is {MAX_TAGS}")
    tags = set()
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"tag {value!r} is not a non-empty string")
        if len(value) > MAX_TAG_CHARS or _has_control(value):
            raise ValueError(
                f"tag {value[:40]!r} is over {MAX_TAG_CHARS} characters or holds a control character"
            )
        tags.add(value.strip())
    return tuple(sorted(tags))
