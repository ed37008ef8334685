from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from engine import folders
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.test_models import write_test_models

GIB = 2**30


@pytest.fixture(scope="session")
def test_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny test models, written once for the session (tests only read them)."""
    models = tmp_path_factory.mktemp("shared") / "models"
    write_test_models(models)
    return models


@pytest.fixture
def dirs(tmp_path: Path, test_models_dir: Path) -> Iterator[folders.FolderSettings]:
    """Folders for one test: the shared test models, and fresh input, output and temp folders."""
    previous = folders.current()
    settings = folders.configure(base_dir=tmp_path, models_dir=test_models_dir)
    for directory in (settings.input_dir, settings.output_dir, settings.temp_dir):
        directory.mkdir()
    yield settings
    folders.use(previous)


@pytest.fixture
def manager() -> ModelManager:
    """A CPU fp32 model manager of the test's own, passed to the loaders it runs."""
    return ModelManager(torch.device("cpu"), torch.float32, budget_bytes=4 * GIB)
