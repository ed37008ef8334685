"""ComfyUI's tokenization rules: a prompt becomes windows of (token id, weight) pairs.

Each weighted piece of the prompt (see prompt_weights) is tokenized on its own, without special
tokens. CLIP-L reads 77 tokens at a time, so the pieces are packed into windows of 77, each opened
by BOS and closed by EOS and padded to full length; a piece shorter than 8 tokens that does not fit
moves whole to the next window, a longer one is cut at the window's end. T5 encoders read the
whole prompt in one sequence, closed by EOS and padded to at least 256 tokens (Flux and AuraFlow
were trained on 256-token prompts). The windows keep the weights; encoding applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from engine.diffusion.text_encoders.prompt_weights import parse_prompt_weights
from engine.diffusion.text_encoders.spec import TextEncoderFamily

KEEP_TOGETHER = 8
"""Pieces of fewer tokens than this are never split between two windows."""

TokenWeights = list[tuple[int, float]]
"""One window: (token id, weight) pairs."""


@dataclass(frozen=True)
class TokenizationRules:
    start: int | None
    """Token that opens every window (CLIP's BOS), or None."""
    end: int
    """Token that closes every window (EOS)."""
    pad: int
    window: int | None = None
    """Tokens per window, start and end included; None reads the whole prompt as one window."""
    min_length: int = 0
    """The last window is padded at least to this length."""

    @property
    def marks(self) -> list[int]:
        """What an empty prompt tokenizes to: the tokens the tokenizer itself wraps text in."""
        return [self.end] if self.start is None else [self.start, self.end]

    def empty(self, length: int) -> list[int]:
        """An empty prompt at the given length: the baseline that emphasis weights scale from."""
        return self.marks + [self.pad] * (length - len(self.marks))


FAMILY_RULES: dict[TextEncoderFamily, TokenizationRules] = {
    "clip_l": TokenizationRules(start=49406, end=49407, pad=49407, window=77),
    "t5xxl": TokenizationRules(start=None, end=1, pad=0, min_length=256),
    "pile_t5xl": TokenizationRules(start=None, end=2, pad=1, min_length=256),
}


def tokenize_with_weights(
    text: str, encode: Callable[[str], list[int]], rules: TokenizationRules
) -> list[TokenWeights]:
    """The prompt as windows of (token, weight); `encode` tokenizes text without special tokens."""
    opening = [] if rules.start is None else [(rules.start, 1.0)]
    room = (rules.window - 1) if rules.window is not None else None
    windows: list[TokenWeights] = []
    current = list(opening)
    for segment, weight in parse_prompt_weights(text):
        group = [(token, weight) for token in encode(segment)]
        # A long piece is cut at a window's end; so is one too long for any window, however short.
        cut = len(group) >= KEEP_TOGETHER or (room is not None and len(group) > room - len(opening))
        while group:
            free = len(group) if room is None else room - len(current)
            if len(group) <= free:
                current.extend(group)
                break
            if cut:
                current.extend(group[:free])
                group = group[free:]
            windows.append(_close(current, rules, rules.window or 0))
            current = list(opening)
    windows.append(_close(current, rules, max(rules.window or 0, rules.min_length)))
    return windows


def count_tokens(text: str, encode: Callable[[str], list[int]], rules: TokenizationRules) -> int:
    """How many tokens the encoder reads for the prompt: its text tokens (emphasis syntax removed, as
    `tokenize_with_weights` removes it) plus the tokens that wrap one window, padding not counted.

    This is the length diffusers' and BFL's pipelines compare with `max_sequence_length` (the tokenizer's
    own output, EOS included), so an endpoint bounds prompts in the number its model was trained on.
    """
    return len(rules.marks) + sum(len(encode(segment)) for segment, _ in parse_prompt_weights(text))


def _close(window: TokenWeights, rules: TokenizationRules, length: int) -> TokenWeights:
    window.append((rules.end, 1.0))
    window.extend([(rules.pad, 1.0)] * (length - len(window)))
    return window
