"""ComfyUI's emphasis syntax: which parts of a prompt carry which weight.

`(text)` multiplies the weight of `text` by 1.1, and nests: `((text))` is 1.21. `(text:1.5)` sets it
to 1.5 outright, whatever encloses it. `\\(` and `\\)` are literal parentheses. Brackets that do not
pair up are kept as text, as ComfyUI keeps them; so is a `:` suffix that is not a number.
"""

from __future__ import annotations

from collections.abc import Iterator

EMPHASIS = 1.1

_LITERAL_OPEN = "\ue000"
_LITERAL_CLOSE = "\ue001"
"""Private-use characters that stand in for escaped parentheses while the brackets are paired."""


def parse_prompt_weights(text: str) -> list[tuple[str, float]]:
    """The prompt cut into (segment, weight) pieces, in order, escapes resolved; empty pieces dropped."""
    protected = text.replace("\\)", _LITERAL_CLOSE).replace("\\(", _LITERAL_OPEN)
    return [
        (segment.replace(_LITERAL_CLOSE, ")").replace(_LITERAL_OPEN, "("), weight)
        for segment, weight in _weighted(protected, 1.0)
    ]


def _weighted(text: str, weight: float) -> Iterator[tuple[str, float]]:
    for chunk in _top_level_chunks(text):
        if len(chunk) >= 2 and chunk.startswith("(") and chunk.endswith(")"):
            yield from _weighted(*_emphasis(chunk[1:-1], weight))
        else:
            yield chunk, weight


def _emphasis(inner: str, outer_weight: float) -> tuple[str, float]:
    """A bracketed group's text and weight: an explicit `:number` suffix, else 1.1 times the outer weight."""
    colon = inner.rfind(":")
    if colon > 0:
        try:
            return inner[:colon], float(inner[colon + 1 :])
        except ValueError:
            pass
    return inner, outer_weight * EMPHASIS


def _top_level_chunks(text: str) -> list[str]:
    """Plain runs and bracketed groups at nesting depth zero.

    A `)` with no `(` before it drives the depth below zero; text stays plain until the depth is back
    to zero and a new `(` opens, which is how ComfyUI reads unbalanced prompts.
    """
    chunks: list[str] = []
    start = depth = 0
    for i, char in enumerate(text):
        if char == "(":
            if depth == 0 and i > start:
                chunks.append(text[start:i])
                start = i
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                chunks.append(text[start : i + 1])
                start = i + 1
    if start < len(text):
        chunks.append(text[start:])
    return chunks
