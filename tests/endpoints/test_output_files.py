"""A failed image write leaves nothing behind: no partial file under the result's name, no temporary file.

The failure is a real one: the kernel refuses writes past RLIMIT_FSIZE (EFBIG) part-way through the file,
as a full disk would, so the nodes' own error handling is what is tested, without root or a mount.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from engine import folders
from engine.nodes.image import SaveImage
from engine.nodes.output_files import write_numbered
from engine.nodes.save_image_as import SaveImageAs

LIMIT = 16 * 1024
"""Far below the size of a noisy 128x128 PNG (about 49 KB: noise does not compress)."""


@contextmanager
def file_size_limit(nbytes: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def noise(height: int = 128, width: int = 128) -> torch.Tensor:
    return torch.rand((1, height, width, 3), generator=torch.Generator().manual_seed(0))


def save_png(node: str) -> dict[str, Any]:
    if node == "SaveImage":
        return SaveImage().save_images(noise(), "renders/fox")
    return SaveImageAs().save(noise(), "renders/fox", "png", 80)


@pytest.mark.parametrize("node", ["SaveImage", "SaveImageAs"])
def test_a_write_failing_part_way_leaves_no_file(workdir: folders.FolderSettings, node: str) -> None:
    folder = workdir.output_dir / "renders"
    with file_size_limit(LIMIT), pytest.raises(OSError) as failed:
        save_png(node)
    assert failed.value.errno == errno.EFBIG
    assert os.listdir(folder) == []  # neither fox_00001_.png (partial) nor the temporary file
    entry = save_png(node)["ui"]["images"][0]  # with room again, the same number is used, whole
    assert entry["filename"] == "fox_00001_.png"
    expected = (255.0 * noise()[0].numpy()).clip(0, 255).astype(np.uint8)  # ComfyUI's conversion
    with Image.open(folder / "fox_00001_.png") as written:
        assert np.array_equal(np.asarray(written), expected)
    assert os.listdir(folder) == ["fox_00001_.png"]


def test_a_name_another_writer_took_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "fox_00001_.png").write_bytes(b"the other job's image")
    path, counter = write_numbered(tmp_path, "fox", 1, "png", lambda stream: stream.write(b"ours"))
    assert (path.name, counter) == ("fox_00002_.png", 2) and path.read_bytes() == b"ours"
    assert (tmp_path / "fox_00001_.png").read_bytes() == b"the other job's image"
    assert sorted(os.listdir(tmp_path)) == ["fox_00001_.png", "fox_00002_.png"]
