"""Each encoder loaded by the engine from a ComfyUI-layout file encodes exactly as transformers does
when it loads the same weights by its own path: `from_pretrained` of a folder with config.json and the
weights. The configs here are written out by hand, not taken from the engine's detection."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedModel,
    T5Config,
    T5EncoderModel,
    UMT5Config,
    UMT5EncoderModel,
)

from engine.diffusion.safetensors_file import RANDOM_TEST_WEIGHTS_METADATA
from engine.diffusion.text_encoders import (
    CHECKPOINT_PREFIXES,
    TextEncoderSource,
    load_clip,
    sources_in_checkpoint,
)
from engine.diffusion.text_encoders.test_files import tiny_text_encoder_tensors, write_test_tokenizers

TINY_T5 = {"vocab_size": 32128, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4}
PROMPT = "a (red:1.2) cat sitting on a chair, glowing fizzy rainbow drink"


def reference(folder: Path, model_class: type[PreTrainedModel], config, tensors) -> PreTrainedModel:
    folder.mkdir()
    config.save_pretrained(folder)
    save_file({name: tensor.contiguous() for name, tensor in tensors.items()}, folder / "model.safetensors")
    return model_class.from_pretrained(folder, dtype=torch.float32).eval()


def token_ids(windows) -> torch.Tensor:
    return torch.tensor([[token for token, _ in window] for window in windows])


def unweighted(tokens):
    return {
        key: [[(token, 1.0) for token, _ in window] for window in windows] for key, windows in tokens.items()
    }


def test_clip_l_from_a_comfyui_file_matches_transformers(tmp_path, text_encoders_dir, manager):
    clip = load_clip(
        [TextEncoderSource.from_file(text_encoders_dir / "clip_l.safetensors")],
        "stable_diffusion",
        [text_encoders_dir],
        manager=manager,
    )
    tokens = unweighted(clip.tokenize(PROMPT))
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        max_position_embeddings=77,
        projection_dim=64,
    )
    expected = reference(tmp_path / "clip_l", CLIPTextModel, config, tiny_text_encoder_tensors("clip_l"))

    cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)

    with torch.no_grad():
        out = expected(input_ids=token_ids(tokens["l"]))
    torch.testing.assert_close(cond, out.last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(pooled, out.pooler_output[:1], rtol=0, atol=1e-5)


def test_t5xxl_from_a_comfyui_file_matches_transformers(tmp_path, text_encoders_dir, manager):
    clip = load_clip(
        [
            TextEncoderSource.from_file(text_encoders_dir / "t5xxl_fp16.safetensors"),
            TextEncoderSource.from_file(text_encoders_dir / "clip_l.safetensors"),
        ],
        "flux",
        [text_encoders_dir],
        manager=manager,
    )
    tokens = unweighted(clip.tokenize(PROMPT))
    config = T5Config(**TINY_T5, feed_forward_proj="gated-gelu")
    expected = reference(tmp_path / "t5xxl", T5EncoderModel, config, tiny_text_encoder_tensors("t5xxl"))

    cond = clip.encode_from_tokens(tokens)

    with torch.no_grad():
        out = expected(input_ids=token_ids(tokens["t5xxl"]))
    torch.testing.assert_close(cond, out.last_hidden_state, rtol=0, atol=1e-5)


def test_pile_t5xl_from_an_all_in_one_checkpoint_matches_transformers(tmp_path, manager):
    tensors = tiny_text_encoder_tensors("pile_t5xl")
    checkpoint = tmp_path / "checkpoints" / "aura_flow_0.3.safetensors"
    checkpoint.parent.mkdir()
    prefixed = {CHECKPOINT_PREFIXES["pile_t5xl"] + name: tensor for name, tensor in tensors.items()}
    prefixed["model.double_layers.0.attn.w1q.weight"] = torch.zeros(8, 8)
    save_file(prefixed, checkpoint, metadata=RANDOM_TEST_WEIGHTS_METADATA)
    write_test_tokenizers(checkpoint.parent)
    clip = load_clip(sources_in_checkpoint(checkpoint), manager=manager)
    tokens = unweighted(clip.tokenize(PROMPT))
    config = UMT5Config(**TINY_T5, feed_forward_proj="gated-gelu")
    expected = reference(tmp_path / "pile_t5xl", UMT5EncoderModel, config, tensors)

    cond = clip.encode_from_tokens(tokens)

    ids = token_ids(tokens["pile_t5xl"])
    up_to_eos = torch.arange(ids.shape[1]) <= (ids == 2).int().argmax(dim=1, keepdim=True)
    with torch.no_grad():
        out = expected(input_ids=ids, attention_mask=up_to_eos.long())
    torch.testing.assert_close(cond, out.last_hidden_state * up_to_eos.unsqueeze(-1), rtol=0, atol=1e-5)
