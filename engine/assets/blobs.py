"""Content-addressed files: each blob is `<root>/<first two hex digits>/<blake3 hex digest>`.

An upload streams into a hidden temporary file in the root (the same file system as the blobs, so the
final rename is atomic), hashed as it is written; only once complete and flushed to disk does it take its
digest's name. A reader therefore never sees a partial blob, and a crash leaves only a temporary file
that the next start sweeps away. Writes and renames are blocking file operations: callers run them on a
thread (see library.py).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO

import blake3

PARTIAL_PREFIX = ".partial-"
HEAD_BYTES = 64
"""How much of the start of a blob is kept for sniffing its type (engine.assets.mime)."""


class BlobUpload:
    """A blob being received: a temporary file, its running hash and size, and its first bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.head = b""
        self._hasher = blake3.blake3()
        self._file: BinaryIO = open(path, "xb")  # noqa: SIM115 (closed by finish or discard)

    def write(self, chunk: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += chunk[: HEAD_BYTES - len(self.head)]
        self._hasher.update(chunk)
        self._file.write(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Flush the bytes to disk and return their digest."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self._hasher.hexdigest()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


class BlobFolder:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def start_upload(self) -> BlobUpload:
        return BlobUpload(self.root / f"{PARTIAL_PREFIX}{uuid.uuid4().hex}")

    def commit(self, upload: BlobUpload, digest: str) -> bool:
        """Give a finished upload its digest's name; False when that blob was already there (the upload's
        copy is dropped: same hash, same bytes)."""
        target = self.path(digest)
        if target.is_file():
            upload.path.unlink(missing_ok=True)
            return False
        target.parent.mkdir(exist_ok=True)
        os.replace(upload.path, target)
        return True

    def remove(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def sweep(self, keep: set[str]) -> list[str]:
        """Delete temporary files and the blobs no record names (left by a crash between a blob's write
        and its record, or between a record's deletion and its blob's); returns the digests deleted."""
        removed = []
        for entry in self.root.iterdir():
            if entry.name.startswith(PARTIAL_PREFIX):
                entry.unlink(missing_ok=True)
            elif entry.is_dir() and len(entry.name) == 2:
                for blob in entry.iterdir():
                    if blob.name not in keep:
                        blob.unlink(missing_ok=True)
                        removed.append(blob.name)
        return removed
