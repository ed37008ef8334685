"""The weight changes a LoRA file holds, one per layer: LoRA, LoHa, LoKr and plain differences.

A file names each layer it changes by a base name (`lora_unet_double_blocks_0_img_attn_qkv`,
`transformer.transformer_blocks.0.attn.to_q`, ...) followed by the parts of the change (`.lora_up.weight`,
`.lora_A.weight`, `.hada_w1_a`, `.lokr_w1`, `.alpha`, `.diff`, ...). `read_layers` groups the parts by
base name into adapters; each computes its change ΔW in float32 as ComfyUI computes it:
`strength · alpha / rank · (product of its factors)`, alpha defaulting to the rank (a factor of one).

A change can be asked for a subset of its rows: where a file's layer is fused (Flux's qkv) and the
engine's module keeps the parts as separate layers, each part takes its own rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import torch

Rows = tuple[tuple[int, int], ...]
"""Runs (start, stop) of a change's rows, laid end to end: the rows one module parameter is made of."""


def take_rows(tensor: torch.Tensor, rows: Rows | None) -> torch.Tensor:
    if rows is None:
        return tensor
    if len(rows) == 1:
        ((start, stop),) = rows
        return tensor[start:stop]
    return torch.cat([tensor[start:stop] for start, stop in rows])


def _f32(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    return tensor.to(device=device, dtype=torch.float32)


class Adapter(Protocol):
    """One layer's change, computed on demand (the file's tensors stay as they were read)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the whole change: the layer's weight (or bias) shape in the file's naming."""
        ...

    @property
    def nbytes(self) -> int: ...

    def delta(self, rows: Rows | None, strength: float, device: torch.device) -> torch.Tensor:
        """`strength` times the change (its `rows` only, if given), float32 on `device`."""
        ...


def _nbytes(*tensors: torch.Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


@dataclass(frozen=True, eq=False)
class LoRA:
    """ΔW = alpha / rank · up @ down (kohya's lora_up/lora_down, PEFT's lora_B/lora_A)."""

    up: torch.Tensor
    down: torch.Tensor
    alpha: float | None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.up.shape[0], self.down.shape[1])

    @property
    def nbytes(self) -> int:
        return _nbytes(self.up, self.down)

    def delta(self, rows: Rows | None, strength: float, device: torch.device) -> torch.Tensor:
        scale = strength * (self.alpha / self.down.shape[0] if self.alpha is not None else 1.0)
        return scale * (_f32(take_rows(self.up, rows), device) @ _f32(self.down, device))


@dataclass(frozen=True, eq=False)
class LoHa:
    """LyCORIS LoHa: ΔW = alpha / rank · (w1_a @ w1_b) ⊙ (w2_a @ w2_b), rank that of w1_b."""

    w1_a: torch.Tensor
    w1_b: torch.Tensor
    w2_a: torch.Tensor
    w2_b: torch.Tensor
    alpha: float | None

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.w1_a.shape[0], self.w1_b.shape[1])

    @property
    def nbytes(self) -> int:
        return _nbytes(self.w1_a, self.w1_b, self.w2_a, self.w2_b)

    def delta(self, rows: Rows | None, strength: float, device: torch.device) -> torch.Tensor:
        scale = strength * (self.alpha / self.w1_b.shape[0] if self.alpha is not None else 1.0)
        first = _f32(take_rows(self.w1_a, rows), device) @ _f32(self.w1_b, device)
        second = _f32(take_rows(self.w2_a, rows), device) @ _f32(self.w2_b, device)
        return scale * (first * second)


Factor = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
"""A LoKr factor: stored whole, or as the two matrices whose product it is."""


def _factor_shape(factor: Factor) -> tuple[int, int]:
    if isinstance(factor, tuple):
        return factor[0].shape[0], factor[1].shape[1]
    return factor.shape[0], factor.shape[1]


def _factor(factor: Factor, device: torch.device) -> torch.Tensor:
    if isinstance(factor, tuple):
        return _f32(factor[0], device) @ _f32(factor[1], device)
    return _f32(factor, device)


@dataclass(frozen=True, eq=False)
class LoKr:
    """LyCORIS LoKr: ΔW = scale · w1 ⊗ w2 (Kronecker product), each factor whole or as a @ b.

    As in ComfyUI, alpha scales by the rank of the last factor given as a product (w2's if both are),
    and not at all when both factors are whole.
    """

    w1: Factor
    w2: Factor
    alpha: float | None

    @property
    def shape(self) -> tuple[int, ...]:
        (a, b), (c, d) = _factor_shape(self.w1), _factor_shape(self.w2)
        return (a * c, b * d)

    @property
    def nbytes(self) -> int:
        parts = [*(self.w1 if isinstance(self.w1, tuple) else (self.w1,))]
        parts += [*(self.w2 if isinstance(self.w2, tuple) else (self.w2,))]
        return _nbytes(*parts)

    @property
    def rank(self) -> int | None:
        if isinstance(self.w2, tuple):
            return self.w2[1].shape[0]
        if isinstance(self.w1, tuple):
            return self.w1[1].shape[0]
        return None

    def delta(self, rows: Rows | None, strength: float, device: torch.device) -> torch.Tensor:
        rank = self.rank
        scale = strength * (self.alpha / rank if self.alpha is not None and rank is not None else 1.0)
        product = torch.kron(_factor(self.w1, device), _factor(self.w2, device))
        return scale * take_rows(product, rows)


@dataclass(frozen=True, eq=False)
class Difference:
    """A plain difference ΔW stored whole (`.diff` for a weight, `.diff_b` for a bias)."""

    difference: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.difference.shape)

    @property
    def nbytes(self) -> int:
        return _nbytes(self.difference)

    def delta(self, rows: Rows | None, strength: float, device: torch.device) -> torch.Tensor:
        return strength * _f32(take_rows(self.difference, rows), device)


LORA_FORMS = (
    (".lora_up.weight", ".lora_down.weight"),
    (".lora_B.weight", ".lora_A.weight"),
    (".lora.up.weight", ".lora.down.weight"),
    (".lora_linear_layer.up.weight", ".lora_linear_layer.down.weight"),
)
"""(up, down) part names: kohya and LyCORIS; PEFT and diffusers; older diffusers; transformers."""

LOHA_PARTS = (".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b")
LOKR_PARTS = (".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b")

UNSUPPORTED_PARTS = {
    ".dora_scale": "DoRA (a weight-decomposed LoRA) is not supported",
    ".lora_mid.weight": "a LoCon Tucker core (convolutions) is not supported",
    ".hada_t1": "a LoHa Tucker core (convolutions) is not supported",
    ".hada_t2": "a LoHa Tucker core (convolutions) is not supported",
    ".lokr_t2": "a LoKr Tucker core (convolutions) is not supported",
    ".set_weight": "replacing a weight outright is not supported",
    ".w_norm": "a norm-layer weight (GLoRA/OFT-style) is not supported",
    ".b_norm": "a norm-layer bias (GLoRA/OFT-style) is not supported",
    ".reshape_weight": "reshaping a layer (control LoRAs) is not supported",
}
"""Parts ComfyUI knows that this engine does not apply; the whole layer is then left out, since
applying the rest alone would change the model in a way no trainer meant."""

PARTS = tuple(
    sorted(
        {part for form in LORA_FORMS for part in form}
        | set(LOHA_PARTS)
        | set(LOKR_PARTS)
        | {".alpha", ".diff", ".diff_b"}
        | set(UNSUPPORTED_PARTS),
        key=len,
        reverse=True,
    )
)
"""Every part name, longest first (so `.lokr_w1_a` is not read as `.lokr_w1`)."""


@dataclass
class Layers:
    """A LoRA file's changes by base name, and what of the file could not be made into one."""

    weights: dict[str, Adapter] = field(default_factory=dict)
    biases: dict[str, Adapter] = field(default_factory=dict)
    """Changes of a layer's bias (`.diff_b`), under the layer's base name."""
    keys: dict[str, list[str]] = field(default_factory=dict)
    """The file's keys that make up each base name's changes (reported when the layer is not loaded)."""
    unusable: dict[str, str] = field(default_factory=dict)
    """File key -> why it is not loaded, for keys no change could be made of."""


def split_key(key: str) -> tuple[str, str] | None:
    """(base name, part) of a LoRA key, or None when it ends in no part a LoRA file has."""
    for part in PARTS:
        if key.endswith(part) and len(key) > len(part):
            return key[: -len(part)], part
    return None


def read_layers(tensors: Mapping[str, torch.Tensor]) -> Layers:
    """A LoRA file's tensors grouped into one change per layer (and per layer bias)."""
    layers = Layers()
    grouped: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        split = split_key(key)
        if split is None:
            layers.unusable[key] = "not a part of any LoRA format"
            continue
        base, part = split
        grouped.setdefault(base, {})[part] = tensor
        layers.keys.setdefault(base, []).append(key)
    for base, parts in grouped.items():
        problem = _problem(parts)
        if problem is not None:
            layers.unusable.update(dict.fromkeys(layers.keys.pop(base), problem))
            continue
        weight = _weight_change(parts)
        if weight is not None:
            layers.weights[base] = weight
        if ".diff_b" in parts:
            layers.biases[base] = Difference(parts[".diff_b"])
        if weight is None and ".diff_b" not in parts:
            layers.unusable.update(dict.fromkeys(layers.keys.pop(base), "holds no change (only an alpha?)"))
    return layers


def _problem(parts: Mapping[str, torch.Tensor]) -> str | None:
    """Why a layer's parts cannot be applied, or None when they can."""
    for part, reason in UNSUPPORTED_PARTS.items():
        if part in parts:
            return reason
    for up, down in LORA_FORMS:
        if (up in parts) != (down in parts):
            return f"a LoRA with '{up if up in parts else down}' but no '{down if up in parts else up}'"
        if up in parts and (parts[up].ndim != 2 or parts[down].ndim != 2):
            return "a LoRA of a convolution (4-D factors) fits no layer of these transformers"
        if up in parts and parts[up].shape[1] != parts[down].shape[0]:
            return f"LoRA factors of ranks {parts[up].shape[1]} and {parts[down].shape[0]} do not multiply"
    loha = [part in parts for part in LOHA_PARTS]
    if any(loha) and not all(loha):
        return "a LoHa without all four of hada_w1_a, hada_w1_b, hada_w2_a, hada_w2_b"
    lokr_w1 = ".lokr_w1" in parts or {".lokr_w1_a", ".lokr_w1_b"} <= parts.keys()
    lokr_w2 = ".lokr_w2" in parts or {".lokr_w2_a", ".lokr_w2_b"} <= parts.keys()
    if any(part in parts for part in LOKR_PARTS) and not (lokr_w1 and lokr_w2):
        return "a LoKr without both factors (lokr_w1 or lokr_w1_a/b, and lokr_w2 or lokr_w2_a/b)"
    if any(t.ndim != 2 for part, t in parts.items() if part in LOHA_PARTS or part in LOKR_PARTS):
        return "a LyCORIS change of a convolution (4-D factors) fits no layer of these transformers"
    return None


def _weight_change(parts: Mapping[str, torch.Tensor]) -> Adapter | None:
    alpha = float(parts[".alpha"].item()) if ".alpha" in parts else None
    for up, down in LORA_FORMS:
        if up in parts:
            return LoRA(parts[up], parts[down], alpha)
    if ".hada_w1_a" in parts:
        return LoHa(parts[".hada_w1_a"], parts[".hada_w1_b"], parts[".hada_w2_a"], parts[".hada_w2_b"], alpha)
    if ".lokr_w1" in parts or ".lokr_w1_a" in parts:
        w1 = parts.get(".lokr_w1")
        w2 = parts.get(".lokr_w2")
        return LoKr(
            w1 if w1 is not None else (parts[".lokr_w1_a"], parts[".lokr_w1_b"]),
            w2 if w2 is not None else (parts[".lokr_w2_a"], parts[".lokr_w2_b"]),
            alpha,
        )
    if ".diff" in parts:
        return Difference(parts[".diff"])
    return None
