"""Tokenizers are found beside the text encoders; a missing one says which files to put where."""

from __future__ import annotations

import shutil

import pytest

from engine.diffusion.text_encoders import (
    TextEncoderSource,
    TokenizerMismatchError,
    TokenizerNotFoundError,
    load_clip,
    sources_in_checkpoint,
)
from engine.diffusion.text_encoders.tokenizer_files import find_tokenizer


def test_a_missing_clip_tokenizer_names_its_files_and_where_they_go(tmp_path, text_encoders_dir, manager):
    folder = tmp_path / "text_encoders"
    folder.mkdir()
    shutil.copy(text_encoders_dir / "clip_l.safetensors", folder)
    source = TextEncoderSource.from_file(folder / "clip_l.safetensors")

    with pytest.raises(TokenizerNotFoundError) as error:
        load_clip([source], "stable_diffusion", [folder], manager=manager)

    message = str(error.value)
    assert "clip_l.safetensors" in message and "CLIP-L" in message
    assert "vocab.json + merges.txt" in message
    assert str(folder / "tokenizers" / "clip_l") in message


def test_a_checkpoint_without_a_pile_tokenizer_anywhere_names_tokenizer_model(
    tmp_path, aura_checkpoint, manager
):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    shutil.copy(aura_checkpoint, folder)
    empty_text_encoders = tmp_path / "text_encoders"

    with pytest.raises(TokenizerNotFoundError) as error:
        load_clip(
            sources_in_checkpoint(folder / aura_checkpoint.name),
            tokenizer_roots=[empty_text_encoders],
            manager=manager,
        )

    message = str(error.value)
    assert "tokenizer.model" in message and "fal/AuraFlow-v0.3" in message
    assert str(empty_text_encoders / "tokenizers" / "pile_t5xl") in message


def test_a_tokenizer_beside_the_weight_file_is_preferred(tmp_path, text_encoders_dir):
    beside = tmp_path / "checkpoints" / "tokenizers" / "pile_t5xl"
    shutil.copytree(text_encoders_dir / "tokenizers" / "pile_t5xl", beside)

    found = find_tokenizer("pile_t5xl", tmp_path / "checkpoints" / "aura.safetensors", [text_encoders_dir])

    assert found == beside


def test_the_shared_text_encoders_tokenizers_serve_a_checkpoint_elsewhere(aura_checkpoint, text_encoders_dir):
    found = find_tokenizer("pile_t5xl", aura_checkpoint, [text_encoders_dir])

    assert found == text_encoders_dir / "tokenizers" / "pile_t5xl"


def test_another_models_tokenizer_in_the_folder_is_refused(tmp_path, text_encoders_dir, manager):
    folder = tmp_path / "text_encoders"
    shutil.copytree(text_encoders_dir, folder)
    shutil.copy(
        folder / "tokenizers" / "pile_t5xl" / "tokenizer.model",
        folder / "tokenizers" / "t5xxl" / "spiece.model",
    )
    sources = [
        TextEncoderSource.from_file(folder / name)
        for name in ("clip_l.safetensors", "t5xxl_fp16.safetensors")
    ]

    with pytest.raises(TokenizerMismatchError, match="does not hold a T5-XXL tokenizer"):
        load_clip(sources, "flux", [folder], manager=manager)
