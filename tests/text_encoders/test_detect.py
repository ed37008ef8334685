"""Full-size encoders are recognised from their key sets alone, with the published configs.

The key sets and shapes come from transformers' own modules built on the meta device (no memory),
under the names ComfyUI's files use, so neither side of the check is the engine's layout code.
"""

from __future__ import annotations

import pytest
import torch
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

from engine.diffusion.safetensors_file import SafetensorsHeader, TensorInfo
from engine.diffusion.text_encoders import CHECKPOINT_PREFIXES, detect_text_encoder, text_encoder_layout
from engine.diffusion.text_encoders.clip_l import ClipLConfig
from engine.diffusion.text_encoders.t5 import T5EncoderConfig


def meta_model(model_class: type, config: object) -> dict[str, TensorInfo]:
    with torch.device("meta"):
        module = model_class(config)
    prefix = "text_model." if model_class is CLIPTextModel else ""
    return {
        prefix + name: TensorInfo("BF16", tuple(tensor.shape))
        for name, tensor in module.state_dict().items()
        if not name.endswith("position_ids")
    }


def full_clip_l() -> dict[str, TensorInfo]:
    """openai/clip-vit-large-patch14's text tower, as ComfyUI's clip_l.safetensors holds it."""
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
    )
    return meta_model(CLIPTextModel, config) | {"text_projection.weight": TensorInfo("F16", (768, 768))}


def full_t5xxl() -> dict[str, TensorInfo]:
    """google/t5-v1_1-xxl's encoder."""
    config = T5Config(
        vocab_size=32128,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        feed_forward_proj="gated-gelu",
    )
    return meta_model(T5EncoderModel, config)


def full_pile_t5xl() -> dict[str, TensorInfo]:
    """EleutherAI's Pile-T5-XL encoder as AuraFlow ships it (UMT5 layout)."""
    config = UMT5Config(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_heads=32)
    return meta_model(UMT5EncoderModel, config)


def test_full_size_clip_l_is_recognised_with_its_published_config():
    spec = detect_text_encoder(full_clip_l())

    assert spec is not None and spec.family == "clip_l"
    assert spec.config == ClipLConfig(
        vocab_size=49408,
        max_positions=77,
        hidden_size=768,
        intermediate_size=3072,
        num_layers=12,
        projection_dim=768,
    )
    assert spec.config.num_heads == 12


def test_full_size_t5xxl_is_recognised_with_its_published_config():
    spec = detect_text_encoder(full_t5xxl())

    assert spec is not None and spec.family == "t5xxl"
    assert spec.config == T5EncoderConfig(
        vocab_size=32128,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        relative_attention_num_buckets=32,
        bias_per_layer=False,
    )


def test_full_size_pile_t5xl_is_recognised_with_its_published_config():
    spec = detect_text_encoder(full_pile_t5xl())

    assert spec is not None and spec.family == "pile_t5xl"
    assert spec.config == T5EncoderConfig(
        vocab_size=32128,
        d_model=2048,
        d_kv=64,
        d_ff=5120,
        num_layers=24,
        num_heads=32,
        relative_attention_num_buckets=32,
        bias_per_layer=True,
    )


@pytest.mark.parametrize("layout", [full_clip_l, full_t5xxl, full_pile_t5xl])
def test_the_layout_the_engine_writes_is_the_real_one(layout):
    real = {name: info.shape for name, info in layout().items()}
    spec = detect_text_encoder(layout())

    written = text_encoder_layout(spec)

    # transformers lists the encoder's view of the shared T5 embedding too; files may or may not repeat it
    real.pop("encoder.embed_tokens.weight", None)
    assert written == real


def test_an_encoder_inside_an_all_in_one_checkpoint_is_recognised_under_its_prefix(tmp_path):
    prefix = CHECKPOINT_PREFIXES["pile_t5xl"]
    tensors = {prefix + name: info for name, info in full_pile_t5xl().items()}
    tensors["model.double_layers.0.attn.w1q.weight"] = TensorInfo("BF16", (3072, 3072))
    header = SafetensorsHeader(tmp_path / "aura_flow_0.3.safetensors", tensors, {})

    spec = detect_text_encoder(header.under(prefix))

    assert spec is not None and spec.family == "pile_t5xl"
    assert detect_text_encoder(header.tensors) is None


def test_t5_files_that_name_the_embedding_only_by_its_tied_name_are_recognised():
    tensors = full_t5xxl()
    tensors.pop("shared.weight")

    spec = detect_text_encoder(tensors)

    assert spec is not None and spec.config.vocab_size == 32128 and spec.config.d_model == 4096


def test_clip_g_is_not_taken_for_clip_l():
    config = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=20,
    )
    assert detect_text_encoder(meta_model(CLIPTextModel, config)) is None


def test_umt5_xxl_with_its_multilingual_vocabulary_is_not_taken_for_pile_t5():
    config = UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
    assert detect_text_encoder(meta_model(UMT5EncoderModel, config)) is None


def test_tensors_of_other_models_are_not_text_encoders():
    vae = {
        "decoder.conv_in.weight": TensorInfo("F32", (512, 16, 3, 3)),
        "encoder.conv_in.weight": TensorInfo("F32", (128, 3, 3, 3)),
    }
    assert detect_text_encoder(vae) is None
    assert detect_text_encoder({}) is None
