"""Where jobs' images live on disk: `{output}/api/{job_id}_{counter}_.{ext}`, one flat folder.

A file belongs to the job whose id starts its name. That makes the two clean-ups simple: before a job
runs, whatever an earlier, killed run of it left is removed (so a re-run numbers its images from 1
again); and a sweep removes the files of jobs that did not complete (killed, failed, cancelled,
expired) and, at start when nothing is running, half-written temporary files.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from engine.folders import PathEscapeError, resolve_in
from engine.jobs.types import OutputFile

log = logging.getLogger(__name__)

SUBFOLDER = "api"
JOB_FILE = re.compile(r"^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})_")


class JobOutputs:
    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.folder = output_dir / SUBFOLDER

    @staticmethod
    def prefix(job_id: str) -> str:
        """The SaveImage `filename_prefix` for a job's images, relative to the output folder."""
        return f"{SUBFOLDER}/{job_id}"

    def path(self, output: OutputFile) -> Path | None:
        """Where a job's output is, if it is a plain file inside the output folder: a path that leaves the
        folder, or a link anywhere below it, is never followed (None), wherever it points."""
        try:
            path = resolve_in(self.output_dir, output.relative_path)
        except PathEscapeError:
            return None
        if path.resolve() != self.output_dir.resolve() / path.relative_to(self.output_dir):
            return None
        return path

    def _entries(self) -> Iterator[Path]:
        if self.folder.is_dir():
            yield from self.folder.iterdir()

    def clear(self, job_id: str) -> int:
        """Remove what an earlier run of this job left; returns how many files went."""
        stale = [path for path in self._entries() if path.name.startswith(f"{job_id}_")]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def owners(self) -> set[str]:
        """The job ids that have files here."""
        return {match[1] for path in self._entries() if (match := JOB_FILE.match(path.name))}

    def sweep(self, keep: set[str], *, strays: bool) -> int:
        """Remove every job file whose job is not in `keep`, and with `strays` every other file (only
        safe when no job is running: a running job's temporary file is a stray). Returns the count."""
        removed = 0
        for path in list(self._entries()):
            match = JOB_FILE.match(path.name)
            if (match is None and strays and path.is_file()) or (match is not None and match[1] not in keep):
                path.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.info("removed %d leftover output files from %s", removed, self.folder)
        return removed
