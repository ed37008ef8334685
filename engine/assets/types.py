"""The asset record and the blake3 hash as clients write it."""

from __future__ import annotations

import re
from dataclasses import dataclass

HASH_PREFIX = "blake3:"
_HASH = re.compile(r"blake3:([0-9a-fA-F]{64})")

ANONYMOUS_OWNER = ""
"""The owner of every asset on a server started with --open-access (no keys); never a key id."""


def parse_hash(text: object) -> str | None:
    """The lowercase hex digest of a client's `blake3:<64 hex digits>`, or None if it is not that form."""
    if not isinstance(text, str):
        return None
    match = _HASH.fullmatch(text)
    return match.group(1).lower() if match else None


def format_hash(digest: str) -> str:
    return HASH_PREFIX + digest


@dataclass(frozen=True)
class Asset:
    """One owner's record over a blob. `digest` is the blob's blake3 hex digest."""

    id: str
    seq: int
    """Insertion order: listings run newest first and resume after a seq."""
    owner: str
    digest: str
    size_bytes: int
    content_type: str
    file_path: str | None
    tags: tuple[str, ...]
    created_at: float
    job_id: str | None = None
    """The job that produced it; None for an upload."""
    expires_at: float | None = None
    """When an upload stops existing (None: never). A job's output lives as long as its job instead."""
    node_id: str | None = None
    """For a job's output: the node that saved it."""
    output_type: str | None = None
    """For a job's output: what kind of output it is (image, video, audio, text, file)."""


@dataclass(frozen=True)
class NewAsset:
    owner: str
    digest: str
    size_bytes: int
    content_type: str
    file_path: str | None
    tags: tuple[str, ...]
    job_id: str | None = None
    expires_at: float | None = None
    node_id: str | None = None
    output_type: str | None = None


class AssetInUse(Exception):
    """The asset is referenced by a job that is still queued or running, so it may not be deleted."""

    def __init__(self, asset_id: str) -> None:
        super().__init__(f"asset {asset_id} is in use by a job that has not finished")
        self.asset_id = asset_id
