"""A finished node's saved files recorded as its job's assets (engine.assets.outputs), over a real library:
the records are compared with the files written here (blake3 computed here), and hostile UI outputs
(names leading out of the output folder, links, previews, malformed entries) record nothing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest

from engine.assets.outputs import OutputAssets
from engine.assets.types import ANONYMOUS_OWNER
from engine.jobs.types import Job, JobStatus
from tests.assets.test_resolve import ALICE, Library, png


@pytest.fixture
def library(tmp_path: Path) -> Iterator[Library]:
    made = Library(tmp_path)
    yield made
    made.close()


def job(key_id: str | None = ALICE, targets: list[str] | None = None) -> Job:
    return Job(
        id="5f0c8a4e-1111-4222-8333-944445555666",
        seq=1,
        endpoint="comfyui",
        api="comfy",
        status=JobStatus.PROCESSING,
        params={},
        prompt={},
        output_node="",
        cost=0.0,
        key_id=key_id,
        idempotency_key=None,
        webhook_url=None,
        base_url="",
        created_at=0.0,
        targets=["9"] if targets is None else targets,
    )


def image(filename: str, subfolder: str = "", kind: str = "output") -> dict[str, Any]:
    return {"filename": filename, "subfolder": subfolder, "type": kind}


def test_saved_files_become_the_jobs_assets(library: Library, tmp_path: Path) -> None:
    output_dir = tmp_path / "output"
    (output_dir / "sub").mkdir(parents=True)
    data = png(5, 3)
    (output_dir / "sub" / "a_00001_.png").write_bytes(data)
    (output_dir / "clip.webm").write_bytes(b"\x1aE\xdf\xa3 not really a video")
    recorder = OutputAssets(library.library, output_dir)
    shown = {
        "images": [image("a_00001_.png", "sub"), image("p.png", kind="temp")],
        "video": [image("clip.webm")],
    }
    assert library.run(recorder.record(job(), "9", shown)) == 2
    assert library.run(recorder.record(job(), "9", shown)) == 2  # the same files again: no new records
    picture, video = library.run(library.library.job_outputs(ALICE, job().id))
    assert (picture.node_id, picture.output_type, picture.file_path) == ("9", "image", "sub/a_00001_.png")
    assert picture.digest == blake3.blake3(data).hexdigest() and picture.content_type == "image/png"
    assert (video.output_type, video.content_type) == ("video", "video/webm")
    assert library.library.path(picture).read_bytes() == data

    anonymous = job(key_id=None)  # a server with open access: the anonymous owner's
    library.run(recorder.clear(anonymous))
    assert library.run(recorder.record(anonymous, "9", {"images": [image("clip.webm")]})) == 1
    assert [a.file_path for a in library.run(library.library.job_outputs(ANONYMOUS_OWNER, job().id))] == [
        "clip.webm"
    ]
    assert library.run(library.library.job_outputs(ALICE, job().id)) == []  # cleared before the re-run


def test_hostile_ui_outputs_record_nothing(library: Library, tmp_path: Path) -> None:
    output_dir = tmp_path / "output"
    output_dir.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("not an output")
    os.symlink(secret, output_dir / "link.png")
    (output_dir / "real.png").write_bytes(png(2, 2))
    recorder = OutputAssets(library.library, output_dir)
    hostile: dict[str, Any] = {
        "images": [
            image("../secret.txt"),
            image("secret.txt", "../.."),
            image("/etc/passwd"),
            image("link.png"),
            image("missing.png"),
            image("real.png", kind="temp"),
            image("real.png", kind="input"),
            {"subfolder": "", "type": "output"},
            "real.png",
            None,
        ],
        "text": "real.png",
        "gifs": {"filename": "real.png", "type": "output"},
    }
    assert library.run(recorder.record(job(), "9", hostile)) == 0
    assert library.run(recorder.record(job(targets=[]), "9", {"images": [image("real.png")]})) == 1
    endpoint_job = Job(**{**job().__dict__, "targets": None})  # a Segmind/fal job: not recorded
    assert library.run(recorder.record(endpoint_job, "9", {"images": [image("real.png")]})) == 0
    [recorded] = library.run(library.library.job_outputs(ALICE, job().id))
    assert recorded.file_path == "real.png"
