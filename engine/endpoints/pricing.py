"""What a request costs, declared as data in its template, never as code.

A price is `max(minimum, (base + sum of added terms) x product of multiplying terms)`, where each term
reads one field marked `affects_price`: its value times `per_unit` over `divide_by`, or a table lookup.
Nothing is evaluated, every number is checked non-negative when the template loads, so a price can
neither run code nor go below zero, and a client can see exactly which fields move it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from engine.endpoints.fields import format_number, table_key

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

    def amount(self, value: Any) -> float:
        if self.table is not None:
            return self.table[table_key(value)]
        return float(value) * self.per_unit / self.divide_by

    def describe(self) -> str:
        if self.table is not None:
            return f"{self.field} (by table)"
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
