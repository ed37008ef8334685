"""A job's results as assets (Comfy API v2: "outputs are assets"), recorded as the worker commits them.

When a node of a graph job finishes, the files its UI output names as saved (ComfyUI's `type: "output"`
entries; `temp` previews are not results) are recorded in the asset library under the job's owner, each
with the node and the kind of output it is. The worker awaits the records before it stores the job's
final state, so a job seen finished lists every output, and one seen running lists those committed so
far. Jobs of the endpoint APIs (Segmind, fal-style) serve their images through their own routes and are
not recorded.
"""

from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import folders
from engine.assets.library import AssetLibrary, OutputSource
from engine.assets.types import ANONYMOUS_OWNER
from engine.jobs.types import Job

log = logging.getLogger(__name__)

KINDS = {"image": "image", "video": "video", "audio": "audio", "text": "text"}
"""A UI output's media key (singular) -> the specification's OutputType; anything else is a `file`."""


@dataclass(frozen=True)
class SavedFile:
    relative: str
    """Its path relative to the output folder."""
    kind: str


def saved_files(shown: dict[str, Any]) -> list[SavedFile]:
    """The files one node's UI output names as saved to the output folder."""
    files = []
    for media, items in shown.items():
        if not isinstance(items, list):
            continue
        for item in items:
            if not isinstance(item, dict) or item.get("type") != "output" or "filename" not in item:
                continue
            subfolder = item.get("subfolder") or ""
            relative = f"{subfolder}/{item['filename']}" if subfolder else str(item["filename"])
            files.append(SavedFile(relative, KINDS.get(media.rstrip("s"), "file")))
    return files


def job_owner(job: Job) -> str:
    """Whose assets the job's outputs are: its key's, or the anonymous owner's with open access."""
    return job.key_id if job.key_id is not None else ANONYMOUS_OWNER


class OutputAssets:
    """The worker's recorder of graph jobs' outputs (engine.jobs.worker.OutputRecorder)."""

    def __init__(self, library: AssetLibrary, output_dir: Path) -> None:
        self.library = library
        self.output_dir = output_dir

    async def clear(self, job: Job) -> None:
        if job.targets is not None:
            await self.library.forget_job_outputs(job.id)

    async def record(self, job: Job, node_id: str, shown: dict[str, Any]) -> int:
        if job.targets is None:
            return 0
        recorded = 0
        for saved in saved_files(shown):
            try:
                path = folders.resolve_in(self.output_dir, saved.relative)
            except folders.PathEscapeError:
                log.warning("job %s node %s names a file outside the output folder", job.id, node_id)
                continue
            if not path.is_file():
                continue
            content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            source = OutputSource(path, saved.relative, content_type)
            await self.library.add_job_output(job_owner(job), job.id, node_id, saved.kind, source)
            recorded += 1
        return recorded
