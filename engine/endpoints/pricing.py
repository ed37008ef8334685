"""What a request costs, declared as data in its template, never as code.

A price is `max(minimum, (base + sum of added terms) x product of multiplying terms)`, where each term
reads one field marked `affects_price`: its value times `per_unit` over `divide_by`, a table lookup,
or, for a prompt bounded in tokens, `per_unit` for every started block of `per_tokens` of its tokens
(a prompt's compute grows with its length: CLIP reads 77 tokens per pass, T5 a sequence that long).
Nothing is evaluated, every number is checked non-negative when the template loads, so a price can
neither run code nor go below zero, and a client can see exactly which fields move it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.endpoints.fields import format_number, table_key
from engine.endpoints.tokens import TokenLimit

PRICE_DECIMALS = 6


@dataclass(frozen=True)
class PriceTerm:
    field: str
    per_unit: float = 1.0
    """The field's value times this..."""
    divide_by: float = 1.0
    """...divided by this (`width / 1024` reads better than `0.0009765625 * width`)."""
    table: Mapping[str, float] | None = None
    """Field value (as text) -> amount, for enumerations and small integer ranges."""
    per_tokens: int | None = None
    """Price a prompt by its length: `per_unit` for every started block of this many tokens..."""
    tokens: TokenLimit | None = None
    """...counted with the field's tokenizer (set exactly when per_tokens is)."""

    def amount(self, value: Any) -> float:
        if self.table is not None:
            return self.table[table_key(value)]
        if self.per_tokens is not None:
            assert self.tokens is not None
            return math.ceil(self.tokens.count(value) / self.per_tokens) * self.per_unit
        return float(value) * self.per_unit / self.divide_by

    def describe(self) -> str:
        if self.table is not None:
            return f"{self.field} (by table)"
        if self.per_tokens is not None:
            assert self.tokens is not None
            tokens = f"{self.per_tokens} {self.tokens.tokenizer_name} tokens"
            blocks = f"started blocks of {tokens} in {self.field}"
            return blocks if self.per_unit == 1 else f"{format_number(self.per_unit)} * {blocks}"
        text = self.field if self.per_unit == 1 else f"{format_number(self.per_unit)} * {self.field}"
        return text if self.divide_by == 1 else f"{text} / {format_number(self.divide_by)}"


@dataclass(frozen=True)
class Pricing:
    base: float = 0.0
    add: tuple[PriceTerm, ...] = ()
    multiply: tuple[PriceTerm, ...] = ()
    minimum: float = 0.0

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(term.field for term in (*self.add, *self.multiply))

    def cost(self, values: Mapping[str, Any]) -> float:
        total = self.base + sum(term.amount(values[term.field]) for term in self.add)
        for term in self.multiply:
            total *= term.amount(values[term.field])
        return round(max(self.minimum, total), PRICE_DECIMALS)

    def describe(self) -> str:
        """The formula in words, for the docs page and the OpenAPI description."""
        parts = [format_number(self.base)] if self.base or not self.add else []
        parts += [term.describe() for term in self.add]
        formula = " + ".join(parts)
        if self.multiply:
            if len(parts) > 1:
                formula = f"({formula})"
            formula = " * ".join([formula, *(term.describe() for term in self.multiply)])
        if self.minimum:
            formula = f"{formula}, at least {format_number(self.minimum)}"
        return formula
