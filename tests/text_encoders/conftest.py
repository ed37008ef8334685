from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine import folders
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.safetensors_file import RANDOM_TEST_WEIGHTS_METADATA
from engine.diffusion.text_encoders import (
    CHECKPOINT_PREFIXES,
    CLIP,
    TextEncoderSource,
    load_clip,
    sources_in_checkpoint,
)
from engine.diffusion.text_encoders.test_files import tiny_text_encoder_tensors, write_test_text_encoders


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder with the tiny clip_l and t5xxl files and all three tiny tokenizers."""
    root = tmp_path_factory.mktemp("models")
    write_test_text_encoders(root)
    return root


@pytest.fixture
def text_encoders_dir(models_dir: Path) -> Path:
    return models_dir / "text_encoders"


@pytest.fixture
def manager() -> ModelManager:
    """A CPU, float32 manager of the test's own, passed to the loader nodes it runs."""
    return ModelManager(device=torch.device("cpu"), dtype=torch.float32, budget_bytes=2**30)


@pytest.fixture
def configured_folders(models_dir: Path) -> Iterator[folders.FolderSettings]:
    previous = folders.current()
    yield folders.configure(models_dir=models_dir, base_dir=models_dir.parent)
    folders.use(previous)


@pytest.fixture(scope="session")
def aura_checkpoint(models_dir: Path) -> Path:
    """An all-in-one checkpoint holding only the tiny Pile-T5-XL, at ComfyUI's AuraFlow prefix."""
    path = models_dir / "checkpoints" / "aura_flow_0.3.safetensors"
    path.parent.mkdir(exist_ok=True)
    prefix = CHECKPOINT_PREFIXES["pile_t5xl"]
    tensors = {prefix + name: tensor for name, tensor in tiny_text_encoder_tensors("pile_t5xl").items()}
    save_file(tensors, path, metadata=RANDOM_TEST_WEIGHTS_METADATA)
    return path


@pytest.fixture
def flux_clip(text_encoders_dir: Path, manager: ModelManager) -> CLIP:
    sources = [
        TextEncoderSource.from_file(text_encoders_dir / "t5xxl_fp16.safetensors"),
        TextEncoderSource.from_file(text_encoders_dir / "clip_l.safetensors"),
    ]
    return load_clip(sources, "flux", [text_encoders_dir], manager=manager)


@pytest.fixture
def clip_l_clip(text_encoders_dir: Path, manager: ModelManager) -> CLIP:
    source = TextEncoderSource.from_file(text_encoders_dir / "clip_l.safetensors")
    return load_clip([source], "stable_diffusion", [text_encoders_dir], manager=manager)


@pytest.fixture
def aura_clip(aura_checkpoint: Path, text_encoders_dir: Path, manager: ModelManager) -> CLIP:
    return load_clip(
        sources_in_checkpoint(aura_checkpoint), "stable_diffusion", [text_encoders_dir], manager=manager
    )
