"""The tiny test models: the files the example graphs name, in ComfyUI's layout, marked as random."""

from __future__ import annotations

from pathlib import Path

from engine.diffusion.safetensors_file import read_header
from engine.diffusion.test_models import write_test_models

EXPECTED_FILES = [
    "checkpoints/aura_flow_0.2.safetensors",
    "checkpoints/aura_flow_0.3.safetensors",
    "checkpoints/flux1-dev-fp8.safetensors",
    "checkpoints/flux1-schnell-fp8.safetensors",
    "clip_vision/sigclip_vision_patch14_384.safetensors",
    "diffusion_models/flux.1-fill-dev-OneReward-transformer_fp8.safetensors",
    "diffusion_models/flux1-canny-dev.safetensors",
    "diffusion_models/flux1-dev.safetensors",
    "diffusion_models/flux1-fill-dev.safetensors",
    "diffusion_models/flux1-kontext-dev.safetensors",
    "diffusion_models/flux1-schnell.safetensors",
    "loras/removal_timestep_alpha-2-1740.safetensors",
    "loras/uso-flux1-dit-lora-v1.safetensors",
    "model_patches/uso-flux1-projector-v1.safetensors",
    "style_models/flux1-redux-dev.safetensors",
    "text_encoders/clip_l.safetensors",
    "text_encoders/t5xxl_fp16.safetensors",
    "vae/ae.safetensors",
]


def test_every_file_the_examples_name_is_written_and_marked_as_random_weights(test_models_dir: Path) -> None:
    weights = sorted(
        path.relative_to(test_models_dir).as_posix() for path in test_models_dir.rglob("*.safetensors")
    )
    assert weights == EXPECTED_FILES
    for relative in weights:
        assert read_header(test_models_dir / relative).holds_random_test_weights, relative
    tokenizers = test_models_dir / "text_encoders" / "tokenizers"
    assert sorted(path.name for path in tokenizers.iterdir()) == ["clip_l", "pile_t5xl", "t5xxl"]


def test_the_fp8_checkpoint_stores_its_diffusion_model_in_fp8(test_models_dir: Path) -> None:
    header = read_header(test_models_dir / "checkpoints" / "flux1-schnell-fp8.safetensors")
    assert {info.dtype for info in header.under("model.diffusion_model.").values()} == {"F8_E4M3"}


def test_writing_again_gives_the_same_files(tmp_path: Path, test_models_dir: Path) -> None:
    written = write_test_models(tmp_path / "models")
    assert len(written) == len(EXPECTED_FILES)
    for path in written:
        relative = path.relative_to(tmp_path / "models")
        assert path.read_bytes() == (test_models_dir / relative).read_bytes(), relative
