"""One text transformer with its tokenizer, turning windows of weighted tokens into hidden states.

How ComfyUI encodes, for each family: all windows go through the transformer as one batch. When any
token carries an emphasis weight, an empty prompt (start, end, padding) is encoded in the same batch
and each weighted token's state is pushed away from the empty prompt's state at the same position:
`empty + (state - empty) * weight`. The windows' states are then laid end to end. Pile-T5 attends
only up to its first EOS and its states past it are zeroed; CLIP-L and T5-XXL see the padding.
CLIP-L's pooled vector is the first window's final-layer-normed state at its EOS token.

A long prompt is a long pass (forty CLIP windows, or one T5 sequence thousands of tokens long), so
the run's interrupt is checked before every layer of the transformer: a cancelled job stops within
a layer, and the windows still go through as one batch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from engine.diffusion.embedding_cache import EmbeddingCache, EmbeddingKey
from engine.diffusion.lora.patches import WeightPatch, patched
from engine.diffusion.text_encoders.spec import TextEncoderFamily, TextEncoderSpec
from engine.diffusion.text_encoders.tokenization import (
    FAMILY_RULES,
    TokenWeights,
    tokenize_with_weights,
)
from engine.diffusion.text_encoders.tokenizer_files import SegmentTokenizer
from engine.progress import throw_if_interrupted


@dataclass(frozen=True)
class EncoderTraits:
    token_key: str
    """The encoder's key in the token dict a CLIP's `tokenize` returns (ComfyUI's names)."""
    masks_padding: bool
    """Attends only up to the first EOS, and outputs zeros past it."""
    pooled: bool


FAMILY_TRAITS: dict[TextEncoderFamily, EncoderTraits] = {
    "clip_l": EncoderTraits("l", masks_padding=False, pooled=True),
    "t5xxl": EncoderTraits("t5xxl", masks_padding=False, pooled=False),
    "pile_t5xl": EncoderTraits("pile_t5xl", masks_padding=True, pooled=False),
}


class TextEncoder:
    """A text encoder of one family; `module` returns its transformer, resident on the compute device.

    `patches` (LoRAs) are taken on by the shared module for this encoder's passes only (lora.patches).
    With a `cache`, outputs are kept by (`identity`, tokens) so a repeated prompt skips the transformer
    (embedding_cache); `release` is called after each pass the transformer made (the model manager may
    then move it off the GPU).
    """

    def __init__(
        self,
        spec: TextEncoderSpec,
        tokenizer: SegmentTokenizer,
        module: Callable[[], torch.nn.Module],
        identity: Hashable | None = None,
        cache: EmbeddingCache | None = None,
        release: Callable[[], None] | None = None,
    ) -> None:
        self.spec = spec
        self.family: TextEncoderFamily = spec.family
        self.rules = FAMILY_RULES[spec.family]
        self.traits = FAMILY_TRAITS[spec.family]
        self._tokenizer = tokenizer
        self._module = module
        self._identity = identity
        self._cache = cache
        self._release = release
        self.patches: tuple[WeightPatch, ...] = ()

    def with_patches(self, patches: Sequence[WeightPatch]) -> TextEncoder:
        """A copy sharing the tokenizer and module, encoding with `patches` after its own."""
        patched_copy = copy.copy(self)
        patched_copy.patches = (*self.patches, *patches)
        return patched_copy

    def tokenize(self, text: str) -> list[TokenWeights]:
        return tokenize_with_weights(text, self._tokenizer, self.rules)

    def encode(self, windows: list[TokenWeights]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """States [1, tokens, width] of the windows laid end to end, and the pooled vector [1, width]
        (None for T5 encoders); float32 on the CPU."""
        key = None
        if self._cache is not None and self._identity is not None and not self.patches:
            key = EmbeddingKey.of(self._identity, windows)
            if (found := self._cache.get(key)) is not None:
                return found
        encoded = self._encode(windows)
        if key is not None and self._cache is not None:
            self._cache.put(key, encoded)
        if self._release is not None:
            self._release()
        return encoded

    def _encode(self, windows: list[TokenWeights]) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows = [[token for token, _ in window] for window in windows]
        weights = torch.tensor([[weight for _, weight in window] for window in windows]).unsqueeze(-1)
        emphasised = bool((weights != 1.0).any())
        if emphasised or not rows:
            # the empty prompt: the baseline weights scale from, and what encoding no window gives
            rows.append(self.rules.empty(max((len(row) for row in rows), default=0)))
        states, pooled = self._run(rows)
        if not windows:
            return states, pooled
        empty, states = states[-1], states[: len(windows)]
        if emphasised:
            states = torch.where(weights != 1.0, empty + (states - empty) * weights, states)
        return states.reshape(1, -1, states.shape[-1]), pooled

    def _run(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor | None]:
        module = self._module()
        device = next(module.parameters()).device
        ids = torch.tensor(rows, device=device)
        mask = self._up_to_first_end(ids) if self.traits.masks_padding else None
        with patched(module, self.patches), torch.inference_mode(), _interruptible(module):
            output = module(input_ids=ids, attention_mask=mask)
        states = output.last_hidden_state.float()
        if mask is not None:
            states = states * mask.unsqueeze(-1)
        pooled = output.pooler_output[:1].float().cpu() if self.traits.pooled else None
        return states.cpu(), pooled

    def _up_to_first_end(self, ids: torch.Tensor) -> torch.Tensor:
        """1 for each token up to and including a row's first EOS, 0 after it."""
        is_end = (ids == self.rules.end).long()
        ends_before = is_end.cumsum(dim=1) - is_end
        return (ends_before == 0).long()


@contextmanager
def _interruptible(module: torch.nn.Module) -> Iterator[None]:
    """Check for an interrupt before each layer the module runs (the members of its layer lists:
    CLIP's `encoder.layers`, T5's `encoder.block` and each block's `layer`) and before it starts."""
    throw_if_interrupted()
    lists = [child for child in module.modules() if isinstance(child, torch.nn.ModuleList)]
    handles = [layer.register_forward_pre_hook(_check_interrupt) for layers in lists for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _check_interrupt(_module: torch.nn.Module, _args: Any) -> None:
    throw_if_interrupted()
