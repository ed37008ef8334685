"""Files the engine cannot use as text encoders are refused with a message that says why."""

from __future__ import annotations

import re

import pytest
import torch
from safetensors.torch import save_file

from engine.diffusion.safetensors_file import WeightsFileError
from engine.diffusion.text_encoders import TextEncoderSource, load_clip
from engine.diffusion.text_encoders.test_files import tiny_text_encoder_tensors


def test_a_file_that_holds_no_text_encoder_is_refused(tmp_path):
    path = tmp_path / "ae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(4, 16, 3, 3)}, path)

    with pytest.raises(WeightsFileError, match=r"ae\.safetensors: holds no text encoder"):
        TextEncoderSource.from_file(path)


def test_scaled_fp8_weights_are_refused_naming_the_releases_that_work(tmp_path):
    tensors = tiny_text_encoder_tensors("t5xxl")
    tensors["scaled_fp8"] = torch.zeros(0)
    tensors["encoder.block.0.layer.0.SelfAttention.q.scale_weight"] = torch.ones(())
    path = tmp_path / "t5xxl_fp8_e4m3fn_scaled.safetensors"
    save_file(tensors, path)

    with pytest.raises(WeightsFileError, match=r"scaled fp8.*fp16 or plain fp8_e4m3fn"):
        TextEncoderSource.from_file(path)


def test_a_plain_fp8_file_loads(tmp_path, text_encoders_dir, flux_clip, manager):
    tensors = {name: t.to(torch.float8_e4m3fn) for name, t in tiny_text_encoder_tensors("t5xxl").items()}
    save_file(tensors, tmp_path / "t5xxl_fp8_e4m3fn.safetensors")
    sources = [
        TextEncoderSource.from_file(tmp_path / "t5xxl_fp8_e4m3fn.safetensors"),
        TextEncoderSource.from_file(text_encoders_dir / "clip_l.safetensors"),
    ]
    clip = load_clip(sources, "flux", [text_encoders_dir], manager=manager)
    tokens = clip.tokenize("a red cat")

    cond = clip.encode_from_tokens(tokens)

    assert cond.shape == (1, 256, 32) and cond.dtype == torch.float32
    assert torch.isfinite(cond).all()
    assert not torch.equal(cond, flux_clip.encode_from_tokens(tokens))


def test_a_file_missing_weights_names_them_when_first_used(tmp_path, text_encoders_dir, manager):
    tensors = tiny_text_encoder_tensors("t5xxl")
    del tensors["encoder.block.1.layer.1.DenseReluDense.wo.weight"]
    save_file(tensors, tmp_path / "t5xxl_broken.safetensors")
    sources = [
        TextEncoderSource.from_file(tmp_path / "t5xxl_broken.safetensors"),
        TextEncoderSource.from_file(text_encoders_dir / "clip_l.safetensors"),
    ]
    clip = load_clip(sources, "flux", [text_encoders_dir], manager=manager)

    missing = re.escape("not complete: missing encoder.block.1.layer.1.DenseReluDense.wo.weight")
    with pytest.raises(WeightsFileError, match=missing):
        clip.encode("a red cat")
