from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import folders
from engine.diffusion.test_models import write_test_models
from engine.diffusion.text_encoders.test_files import write_test_tokenizers
from engine.endpoints import Endpoint, load_endpoints
from engine.graph.registry import NodeRegistry
from engine.nodes import create_registry

REPO = Path(__file__).resolve().parents[2]
GRAPHS = REPO / "graphs"

MODEL_FILES = {
    "checkpoints": ["aura_flow_0.3.safetensors"],
    "diffusion_models": ["flux1-schnell.safetensors", "flux1-dev.safetensors"],
    "text_encoders": ["t5xxl_fp16.safetensors", "clip_l.safetensors"],
    "vae": ["ae.safetensors"],
}
"""The files the shipped templates name, in the model folders their loaders list."""


@pytest.fixture
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[folders.FolderSettings]:
    """Model, input and output folders under a fresh temporary directory, restored afterwards (not
    tmp_path, where tests write templates: a tokenizer's vocab.json there would read as one)."""
    previous = folders.current()
    yield folders.configure(base_dir=tmp_path_factory.mktemp("workdir"))
    folders.use(previous)


@pytest.fixture(scope="session")
def test_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny test models, written once for the session (tests only link to them)."""
    directory = tmp_path_factory.mktemp("endpoint-models")
    write_test_models(directory)
    return directory


@pytest.fixture
def models(workdir: folders.FolderSettings, test_models_dir: Path) -> Path:
    """Links to the test models under the names the templates use (loading reads their headers), and
    the tiny tokenizers, which endpoints count prompt tokens with."""
    for folder, names in MODEL_FILES.items():
        directory = workdir.models_dir / folder
        directory.mkdir(parents=True, exist_ok=True)
        for name in names:
            (directory / name).symlink_to(test_models_dir / folder / name)
    write_test_tokenizers(workdir.models_dir / "text_encoders")
    return workdir.models_dir


@pytest.fixture
def registry() -> NodeRegistry:
    return create_registry()[0]


@pytest.fixture
def endpoints(registry: NodeRegistry, models: Path) -> dict[str, Endpoint]:
    return load_endpoints(GRAPHS, registry)
