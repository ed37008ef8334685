"""Fixtures of the node tests: fresh user folders, and one torch thread (the tensors are tiny)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from engine import folders


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[folders.FolderSettings]:
    """Input, output and temp folders of the test's own."""
    previous = folders.current()
    settings = folders.configure(base_dir=tmp_path)
    for directory in (settings.input_dir, settings.output_dir, settings.temp_dir):
        directory.mkdir()
    yield settings
    folders.use(previous)
