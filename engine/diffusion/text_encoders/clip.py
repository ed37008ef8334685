"""The CLIP value that flows between nodes (ComfyUI's CLIP): tokenizers and encoders for one model.

It is named CLIP after ComfyUI's type, whatever encoders it holds. Which encoder's states become the
conditioning and which gives the pooled vector is the model's recipe: Flux takes T5-XXL's states and
CLIP-L's pooled vector; AuraFlow takes Pile-T5-XL's states and no pooled vector; CLIP-L alone gives
both. Method names and return shapes follow ComfyUI's, which custom nodes call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from engine.diffusion.lora.patches import WeightPatch, patches_nbytes
from engine.diffusion.protocols import Conditioning
from engine.diffusion.text_encoders.encoder import TextEncoder
from engine.diffusion.text_encoders.tokenization import TokenWeights

Tokens = dict[str, list[TokenWeights]]
"""Per encoder (ComfyUI's keys: "l", "t5xxl", "pile_t5xl"), the prompt's windows."""

"""ComfyUI's CONDITIONING: `[[cond [1, tokens, width], {"pooled_output": [1, width] or None, ...}], ...]`."""


class CLIP:
    def __init__(self, encoders: Mapping[str, TextEncoder], cond_from: str, pooled_from: str | None) -> None:
        self.encoders = dict(encoders)
        self.cond_from = cond_from
        self.pooled_from = pooled_from

    @property
    def nbytes(self) -> int:
        """Memory this CLIP holds of its own (its LoRAs'), for the executor's output cache."""
        return sum(patches_nbytes(encoder.patches) for encoder in self.encoders.values())

    def with_patches(self, patches: Mapping[str, Sequence[WeightPatch]]) -> CLIP:
        """A CLIP whose encoders (by token key: "l", "t5xxl", ...) run with the given patches added."""
        encoders = {
            key: encoder.with_patches(patches[key]) if patches.get(key) else encoder
            for key, encoder in self.encoders.items()
        }
        return CLIP(encoders, self.cond_from, self.pooled_from)

    def tokenize(self, text: str) -> Tokens:
        return {key: encoder.tokenize(text) for key, encoder in self.encoders.items()}

    def encode_from_tokens(
        self, tokens: Tokens, return_pooled: bool = False, return_dict: bool = False
    ) -> Any:
        """The conditioning states [1, tokens, width]; with `return_pooled` also the pooled vector,
        with `return_dict` both as {"cond": ..., "pooled_output": ...} (float32, CPU)."""
        cond, cond_pooled = self.encoders[self.cond_from].encode(tokens[self.cond_from])
        pooled: torch.Tensor | None = None
        if self.pooled_from == self.cond_from:
            pooled = cond_pooled
        elif self.pooled_from is not None:
            _, pooled = self.encoders[self.pooled_from].encode(tokens[self.pooled_from])
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        if return_pooled:
            return cond, pooled
        return cond

    def encode_from_tokens_scheduled(self, tokens: Tokens) -> Conditioning:
        output = self.encode_from_tokens(tokens, return_dict=True)
        cond = output.pop("cond")
        return [[cond, output]]

    def encode(self, text: str) -> torch.Tensor:
        return self.encode_from_tokens(self.tokenize(text))
