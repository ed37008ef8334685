"""Tiny random text encoders and tokenizers in the real layouts, for tests and the demo.

No weights can be downloaded here, so the engine writes its own: the real key layouts at toy widths,
random values, and tokenizers built in memory (a few dozen CLIP byte-pair tokens with the real
BOS/EOS ids; sentencepiece models trained on a handful of sentences). Every weight file says in its
metadata that it holds random test weights, and the model manager announces it when one is loaded.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import sentencepiece
import torch
from safetensors.torch import save_file

from engine.diffusion.safetensors_file import RANDOM_TEST_WEIGHTS_METADATA
from engine.diffusion.text_encoders.clip_l import ClipLConfig
from engine.diffusion.text_encoders.detect import text_encoder_layout
from engine.diffusion.text_encoders.spec import TextEncoderFamily, TextEncoderSpec
from engine.diffusion.text_encoders.t5 import T5EncoderConfig
from engine.diffusion.text_encoders.tokenizer_files import TOKENIZERS_FOLDER

TINY_SPECS: dict[TextEncoderFamily, TextEncoderSpec] = {
    "clip_l": TextEncoderSpec(
        "clip_l",
        ClipLConfig(
            vocab_size=49408,
            max_positions=77,
            hidden_size=64,
            intermediate_size=128,
            num_layers=2,
            projection_dim=64,
        ),
    ),
    "t5xxl": TextEncoderSpec(
        "t5xxl",
        T5EncoderConfig(
            vocab_size=32128,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=32,
            bias_per_layer=False,
        ),
    ),
    "pile_t5xl": TextEncoderSpec(
        "pile_t5xl",
        T5EncoderConfig(
            vocab_size=32128,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=32,
            bias_per_layer=True,
        ),
    ),
}
"""The agreed toy sizes: CLIP-L 64 wide (pooled 64), T5-XXL and Pile-T5-XL 32 wide, two layers each."""

TEXT_ENCODER_FILES: dict[TextEncoderFamily, str] = {
    "clip_l": "clip_l.safetensors",
    "t5xxl": "t5xxl_fp16.safetensors",
}
"""The standalone files written to models/text_encoders (Pile-T5-XL ships only inside AuraFlow)."""

SEEDS: dict[TextEncoderFamily, int] = {"clip_l": 0, "t5xxl": 1, "pile_t5xl": 2}

CLIP_MERGES = (("c", "a"), ("ca", "t</w>"), ("d", "o"), ("do", "g</w>"), ("r", "e"), ("re", "d</w>"))
"""A few merges so that some words are single tokens ("cat", "dog", "red") and the rest spell out."""

SENTENCES = (
    "a photo of a cat sitting on a red chair",
    "the quick brown fox jumps over the lazy dog",
    "a glass filled with glowing fizzy rainbow drink",
    "a bottle with a galaxy inside it on a wooden table",
    "cute anime girl with fluffy ears in a dark forest at night",
)
"""What the tiny sentencepiece models learn their few dozen pieces from."""


def tiny_text_encoder_tensors(
    family: TextEncoderFamily, dtype: torch.dtype = torch.float16
) -> dict[str, torch.Tensor]:
    """Random weights of the tiny encoder in ComfyUI's layout (no prefix), the same on every call.

    Matrices are scaled by their fan-in and norms kept near one, so activations stay in range and the
    outputs differ from token to token, as a real encoder's do.
    """
    generator = torch.Generator().manual_seed(SEEDS[family])
    tensors = {}
    for name, shape in text_encoder_layout(TINY_SPECS[family]).items():
        values = torch.randn(shape, generator=generator)
        if len(shape) > 1:
            values /= math.sqrt(shape[-1])
        elif "norm" in name and name.endswith("weight"):
            values = 1 + 0.1 * values
        else:
            values *= 0.1
        tensors[name] = values.to(dtype)
    return tensors


def write_test_text_encoders(models_dir: Path) -> dict[TextEncoderFamily, Path]:
    """clip_l.safetensors and t5xxl_fp16.safetensors in models_dir/text_encoders, with every tokenizer."""
    folder = models_dir / "text_encoders"
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[TextEncoderFamily, Path] = {}
    for family, filename in TEXT_ENCODER_FILES.items():
        written[family] = folder / filename
        save_file(tiny_text_encoder_tensors(family), written[family], metadata=RANDOM_TEST_WEIGHTS_METADATA)
    write_test_tokenizers(folder)
    return written


def write_test_tokenizers(folder: Path) -> Path:
    """Tiny CLIP-L, T5 and Pile-T5 tokenizers in folder/tokenizers/<family>/, where the lookup finds them."""
    root = folder / TOKENIZERS_FOLDER
    _write_clip_tokenizer(root / "clip_l")
    _write_sentencepiece(root / "t5xxl" / "spiece.model", unk_id=2, bos_id=-1, eos_id=1, pad_id=0)
    _write_sentencepiece(root / "pile_t5xl" / "tokenizer.model", unk_id=0, bos_id=1, eos_id=2, pad_id=-1)
    return root


def _write_clip_tokenizer(folder: Path) -> None:
    """Every printable ASCII character, alone and word-final, plus the merges; BOS/EOS at CLIP's ids."""
    folder.mkdir(parents=True, exist_ok=True)
    characters = [chr(code) for code in range(33, 127)]
    pieces = characters + [f"{c}</w>" for c in characters] + ["".join(pair) for pair in CLIP_MERGES]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    vocab |= {"<|startoftext|>": 49406, "<|endoftext|>": 49407}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = "\n".join(" ".join(pair) for pair in CLIP_MERGES)
    (folder / "merges.txt").write_text(f"#version: 0.2\n{merges}\n", encoding="utf-8")


def _write_sentencepiece(path: Path, *, unk_id: int, bos_id: int, eos_id: int, pad_id: int) -> None:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCES),
        model_writer=model,
        vocab_size=40,
        hard_vocab_limit=False,
        model_type="unigram",
        num_threads=1,
        minloglevel=2,
        unk_id=unk_id,
        bos_id=bos_id,
        eos_id=eos_id,
        pad_id=pad_id,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
