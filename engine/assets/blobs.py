"""Content-addressed files: each blob is `<root>/<first two hex digits>/<blake3 hex digest>`.

An upload streams into a hidden temporary file in the root (the same file system as the blobs, so the
final link or rename is atomic), hashed as it is written; only once complete and flushed to disk does it
take its digest's name. A reader therefore never sees a partial blob, and a crash leaves only a
temporary file that the next start sweeps away. Writes and renames are blocking file operations:
callers run them on a thread (see library.py).

Writers need no lock between them, in one process or several sharing the folder: each writes its own
temporary file, and the name is taken with a hard link, which fails rather than replaces when the blob
is already there, so exactly one writer of a digest is told it created the blob and the others drop
their identical copies. (On a file system without hard links the temporary file is renamed over the
name instead: still atomic and still the same bytes, but then two writers may both be told they
created it.) Deleting is another matter: deciding that no record names a blob is the asset library's,
under its per-process lock (library.py).
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import BinaryIO

import blake3

PARTIAL_PREFIX = ".partial-"
LINKS_UNSUPPORTED = {errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}
"""What `link` fails with where the file system has no hard links (or no more for this file)."""
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
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(upload.path, target)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in LINKS_UNSUPPORTED:
                raise
            created = not target.is_file()
            os.replace(upload.path, target)
            return created
        finally:
            upload.path.unlink(missing_ok=True)
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
