"""Where tokenizer files live beside the text encoders, and reading them.

Weight files do not carry their tokenizer, and none can be downloaded at run time, so each family's
tokenizer files sit in a folder named for the family inside a `tokenizers/` folder:

    models/text_encoders/tokenizers/clip_l/     vocab.json + merges.txt   (openai/clip-vit-large-patch14)
    models/text_encoders/tokenizers/t5xxl/      spiece.model or tokenizer.json   (google/t5-v1_1-xxl)
    models/text_encoders/tokenizers/pile_t5xl/  tokenizer.model   (fal/AuraFlow-v0.3, its tokenizer/ folder)

The folder beside the weight file is searched first (`models/checkpoints/tokenizers/pile_t5xl/` for
an AuraFlow checkpoint, say), then the `tokenizers/` folder of each text_encoders search path, so one
set of tokenizers serves every checkpoint.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import sentencepiece
from transformers import CLIPTokenizer, T5Tokenizer

from engine.diffusion.text_encoders.spec import FAMILY_NAMES, TextEncoderFamily
from engine.diffusion.text_encoders.tokenization import FAMILY_RULES

TOKENIZERS_FOLDER = "tokenizers"

TOKENIZER_FILES: dict[TextEncoderFamily, tuple[tuple[str, ...], ...]] = {
    "clip_l": (("vocab.json", "merges.txt"),),
    "t5xxl": (("spiece.model",), ("tokenizer.json",)),
    "pile_t5xl": (("tokenizer.model",),),
}
"""Per family, the sets of files any one of which makes a usable tokenizer folder."""

TOKENIZER_SOURCES: dict[TextEncoderFamily, str] = {
    "clip_l": "the openai/clip-vit-large-patch14 repository",
    "t5xxl": "the google/t5-v1_1-xxl repository",
    "pile_t5xl": "the tokenizer/ folder of the fal/AuraFlow-v0.3 repository",
}

SegmentTokenizer = Callable[[str], list[int]]
"""Text to token ids, without the special tokens the tokenizer would wrap it in."""


class TokenizerNotFoundError(FileNotFoundError):
    """No folder holds the tokenizer files a text encoder needs; the message says what to put where."""


class TokenizerMismatchError(ValueError):
    """A tokenizer folder holds some other model's tokenizer."""


def tokenizer_folders(
    family: TextEncoderFamily, weights: Path | None, search_roots: Sequence[Path]
) -> list[Path]:
    """The folders searched, in order, for the tokenizer of the `family` encoder stored in `weights`
    (None: of no file in particular, as when an endpoint counts a prompt's tokens)."""
    candidates = [] if weights is None else [weights.parent / TOKENIZERS_FOLDER / family]
    candidates += [root / TOKENIZERS_FOLDER / family for root in search_roots]
    return list(dict.fromkeys(candidates))


def find_tokenizer(family: TextEncoderFamily, weights: Path | None, search_roots: Sequence[Path]) -> Path:
    """The first folder holding the tokenizer; else an error naming the files and where they belong."""
    folders = tokenizer_folders(family, weights, search_roots)
    for folder in folders:
        if any(all((folder / name).is_file() for name in files) for files in TOKENIZER_FILES[family]):
            return folder
    wanted = " or ".join(" + ".join(files) for files in TOKENIZER_FILES[family])
    shared = search_roots[0] / TOKENIZERS_FOLDER / family if search_roots else folders[0]
    looked = ", ".join(str(folder) for folder in folders)
    owner = "" if weights is None else f"{weights.name}: "
    raise TokenizerNotFoundError(
        f"{owner}no {FAMILY_NAMES[family]} tokenizer found. Put {wanted} (from "
        f"{TOKENIZER_SOURCES[family]}) in {shared} (searched {looked})."
    )


def load_tokenizer(family: TextEncoderFamily, folder: Path) -> SegmentTokenizer:
    """The family's tokenizer from `folder`, checked to mark text with the family's special tokens."""
    if family == "pile_t5xl":
        encode, marks = _sentencepiece(folder / "tokenizer.model")
    else:
        encode, marks = _transformers(family, folder)
    expected = FAMILY_RULES[family].marks
    if marks != expected:
        raise TokenizerMismatchError(
            f"{folder} does not hold a {FAMILY_NAMES[family]} tokenizer: it wraps text in token ids "
            f"{marks}, where {FAMILY_NAMES[family]} uses {expected}"
        )
    return encode


def _transformers(family: TextEncoderFamily, folder: Path) -> tuple[SegmentTokenizer, list[int]]:
    tokenizer_class = CLIPTokenizer if family == "clip_l" else T5Tokenizer
    # Prompts are windowed here, not truncated, so the tokenizer's own length limit is lifted.
    tokenizer = tokenizer_class.from_pretrained(str(folder), model_max_length=sys.maxsize)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return encode, tokenizer("")["input_ids"]


def _sentencepiece(model_file: Path) -> tuple[SegmentTokenizer, list[int]]:
    """Pile-T5's LLaMA vocabulary, read by sentencepiece itself as ComfyUI reads it: no BOS, EOS after."""
    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))

    def encode(text: str) -> list[int]:
        return processor.encode(text)

    return encode, [*processor.encode(""), processor.eos_id()]
