"""Counting a prompt's tokens at submit, with the tokenizer of the encoder that will read it.

Compute grows with a prompt's length (CLIP reads it 77 tokens at a time, T5 in one sequence as long as
the prompt), while the models were trained on a fixed length: Flux schnell's T5 on 256 tokens, Flux
dev's on 512, AuraFlow's Pile-T5 on 256 (BFL's and diffusers' `max_sequence_length`). A template
therefore bounds a prompt field in tokens of a named tokenizer, `"max_tokens": 256, "tokenizer":
"t5xxl"`, and a longer prompt is refused before it is queued, naming the count and the bound.

Tokenizers are read once, when the endpoints load, from the `tokenizers/<family>/` folder of the model
folders (where the text encoders find theirs), and kept; counting runs only the tokenizer, never torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine import folders
from engine.diffusion.text_encoders.spec import FAMILY_NAMES, TextEncoderFamily
from engine.diffusion.text_encoders.tokenization import FAMILY_RULES, count_tokens
from engine.diffusion.text_encoders.tokenizer_files import (
    SegmentTokenizer,
    TokenizerMismatchError,
    TokenizerNotFoundError,
    find_tokenizer,
    load_tokenizer,
)
from engine.endpoints.errors import FieldError

TOKENIZERS: tuple[TextEncoderFamily, ...] = tuple(FAMILY_RULES)
"""The names a template's `tokenizer` may give."""

TOKENIZER_FOLDERS = ("text_encoders", "checkpoints")
"""Model folders whose `tokenizers/` subfolder is searched: the shared place, then beside checkpoints."""


class Tokenizers:
    """The tokenizers endpoints count with, each read from its folder on first use and then kept."""

    def __init__(self, search_roots: Sequence[Path]) -> None:
        self.search_roots = tuple(search_roots)
        self._loaded: dict[TextEncoderFamily, SegmentTokenizer] = {}

    @classmethod
    def from_model_folders(cls) -> Tokenizers:
        return cls([root for name in TOKENIZER_FOLDERS for root in folders.get_folder_paths(name)])

    def problem(self, family: TextEncoderFamily) -> str | None:
        """Why the family's tokenizer cannot be used (reading it now if it is not yet), or None."""
        try:
            self._encoder(family)
        except (TokenizerNotFoundError, TokenizerMismatchError, OSError) as exc:
            return str(exc)
        return None

    def count(self, family: TextEncoderFamily, text: str) -> int:
        return count_tokens(text, self._encoder(family), FAMILY_RULES[family])

    def _encoder(self, family: TextEncoderFamily) -> SegmentTokenizer:
        if family not in self._loaded:
            self._loaded[family] = load_tokenizer(family, find_tokenizer(family, None, self.search_roots))
        return self._loaded[family]


@dataclass(frozen=True)
class TokenLimit:
    """At most `maximum` tokens of `tokenizer` in a string field."""

    tokenizer: TextEncoderFamily
    maximum: int
    tokenizers: Tokenizers = field(compare=False, repr=False)

    @property
    def tokenizer_name(self) -> str:
        return FAMILY_NAMES[self.tokenizer]

    def count(self, text: str) -> int:
        return self.tokenizers.count(self.tokenizer, text)

    def check(self, name: str, text: str) -> FieldError | None:
        tokens = self.count(text)
        if tokens <= self.maximum:
            return None
        return {
            "field": name,
            "code": "max_tokens",
            "message": (
                f"{name} must be at most {self.maximum} {self.tokenizer_name} tokens "
                f"(it is {tokens}); the model reads no more"
            ),
            "max_tokens": self.maximum,
            "received_tokens": tokens,
            "tokenizer": self.tokenizer,
        }
