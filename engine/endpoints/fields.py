"""Request fields: their declared type and bounds, and turning a client's value into a checked one.

Two encodings reach an endpoint. A JSON body carries typed values, and those types are the contract:
`"steps": "25"` in JSON is refused (the schema says integer; a string there is a client bug more often
than not), with two tolerances JSON itself forces on us: an integral number such as `25.0` is an integer
(some JSON writers emit every number as a float), and `null` means "not sent". A form (multipart or
urlencoded, as Segmind's JavaScript sample sends) carries only text, so there every value is parsed from
its string: "25", "1.73", "true"/"false"/"1"/"0", and an empty string for a non-string field means
"not sent" (an empty form input). A non-text value in a form (an uploaded file) is judged as JSON.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from engine.endpoints.errors import FieldError
from engine.endpoints.tokens import TokenLimit

FieldType = Literal["integer", "number", "string", "boolean"]
FIELD_TYPES: tuple[FieldType, ...] = ("integer", "number", "string", "boolean")

DEFAULT_MAX_LENGTH = 10_000
"""Characters a string field accepts when its template names no limit: far above any useful prompt
(T5 reads a few hundred tokens), low enough that a request cannot make the server tokenize megabytes."""

RANDOM_SEED_LIMIT = 2**53
"""Random seeds are drawn below this, so a JavaScript client can send the returned seed back exactly."""

_ECHO_LIMIT = 100
"""Longer received strings are cut in error reports: the client already has them."""


class InputRef(NamedTuple):
    """One input of one node of the template graph."""

    node: str
    input: str

    def __str__(self) -> str:
        return f"{self.node}.{self.input}"


@dataclass(frozen=True)
class Derivation:
    """A field whose value picks a row of constants for other inputs (aspect_ratio -> width, height)."""

    targets: Mapping[str, tuple[InputRef, ...]]
    """Component name -> the inputs it sets."""
    table: Mapping[str, Mapping[str, Any]]
    """Field value (as text) -> component name -> value."""

    def row(self, value: Any) -> Mapping[str, Any]:
        return self.table[table_key(value)]


def table_key(value: Any) -> str:
    """JSON object keys are strings, so a table row for the integer 2 is written "2"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class FieldProblem(ValueError):
    def __init__(self, error: FieldError) -> None:
        super().__init__(error["message"])
        self.error = error


def format_number(value: float | int) -> str:
    """5.0 -> "5", 1.73 -> "1.73", 2**64 - 1 in full: how a bound reads in an error message."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def _echo(value: Any) -> Any:
    if isinstance(value, str) and len(value) > _ECHO_LIMIT:
        return value[:_ECHO_LIMIT] + "…"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return type(value).__name__


_ARTICLE = {"integer": "an integer", "number": "a number", "string": "a string", "boolean": "true or false"}


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    description: str = ""
    required: bool = False
    default: Any = None
    """None: no default (the field is required, random, or simply left out of the graph)."""
    random: bool = False
    """An integer (a seed) drawn at random when the request leaves it out."""
    minimum: int | float | None = None
    maximum: int | float | None = None
    multiple_of: int | None = None
    enum: tuple[Any, ...] | None = None
    max_length: int | None = None
    max_tokens: TokenLimit | None = None
    """A prompt's bound in its encoder's tokens (checked after max_length, which bounds the counting)."""
    affects_price: bool = False
    accepted_only: bool = False
    """Accepted for compatibility with the API it imitates, but it changes nothing in the image."""
    example: Any = None
    sets: tuple[InputRef, ...] = ()
    derive: Derivation | None = None

    @property
    def has_default(self) -> bool:
        return self.default is not None

    def parse(self, raw: Any, *, text: bool) -> Any:
        """The checked value of what a client sent (never None: absence is decided by the caller)."""
        value = self._from_text(raw) if text and isinstance(raw, str) else self._from_json(raw)
        error = self.check(value)
        if error is not None:
            raise FieldProblem(error)
        return value

    def check(self, value: Any) -> FieldError | None:
        """Whether a typed value keeps to the field's bounds (also used on template defaults)."""
        if self.enum is not None and value not in self.enum:
            return {
                "field": self.name,
                "code": "enum",
                "message": f"{self.name} must be one of: {', '.join(table_key(v) for v in self.enum)}",
                "allowed": list(self.enum),
                "received": _echo(value),
            }
        if self.type in ("integer", "number"):
            return self._check_number(value)
        if self.type == "string" and self.max_length is not None and len(value) > self.max_length:
            return {
                "field": self.name,
                "code": "max_length",
                "message": f"{self.name} must be at most {self.max_length} characters",
                "max_length": self.max_length,
                "received_length": len(value),
            }
        if self.type == "string" and self.max_tokens is not None:
            return self.max_tokens.check(self.name, value)
        return None

    def random_value(self) -> int:
        """A seed within the field's bounds, below RANDOM_SEED_LIMIT where the bounds allow."""
        low = int(self.minimum) if self.minimum is not None else 0
        high = (
            RANDOM_SEED_LIMIT - 1 if self.maximum is None else min(int(self.maximum), RANDOM_SEED_LIMIT - 1)
        )
        return low + secrets.randbelow(max(high, low) - low + 1)

    def _check_number(self, value: int | float) -> FieldError | None:
        low, high = self.minimum, self.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            error: FieldError = {"field": self.name, "code": "range", "message": "", "received": value}
            if low is not None and high is not None:
                error["message"] = (
                    f"{self.name} must be between {format_number(low)} and {format_number(high)}"
                )
            elif low is not None:
                error["message"] = f"{self.name} must be at least {format_number(low)}"
            else:
                assert high is not None
                error["message"] = f"{self.name} must be at most {format_number(high)}"
            if low is not None:
                error["minimum"] = low
            if high is not None:
                error["maximum"] = high
            return error
        if self.multiple_of and value % self.multiple_of:
            return {
                "field": self.name,
                "code": "multiple_of",
                "message": f"{self.name} must be a multiple of {self.multiple_of}",
                "multiple_of": self.multiple_of,
                "received": value,
            }
        return None

    def _wrong_type(self, raw: Any, *, text: bool = False) -> FieldProblem:
        if text:
            got = f'"{_echo(raw)}"'
        elif isinstance(raw, str):
            got = f'the string "{_echo(raw)}"'
        elif isinstance(raw, bool):
            got = "true" if raw else "false"
        elif isinstance(raw, int | float):
            got = format_number(raw)
        elif isinstance(raw, list | tuple):
            got = "a list"
        elif isinstance(raw, Mapping):
            got = "an object"
        else:
            got = type(raw).__name__
        return FieldProblem(
            {
                "field": self.name,
                "code": "type",
                "message": f"{self.name} must be {_ARTICLE[self.type]} (got {got})",
                "expected": self.type,
                "received": _echo(raw),
            }
        )

    def _from_json(self, raw: Any) -> Any:
        if self.type == "integer":
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
        elif self.type == "number":
            if isinstance(raw, int | float) and not isinstance(raw, bool) and math.isfinite(raw):
                return float(raw)
        elif self.type == "string":
            if isinstance(raw, str):
                return raw
        elif isinstance(raw, bool):
            return raw
        raise self._wrong_type(raw)

    def _from_text(self, raw: str) -> Any:
        if self.type == "string":
            return raw
        text = raw.strip()
        if self.type == "boolean":
            if text.lower() in ("true", "1"):
                return True
            if text.lower() in ("false", "0"):
                return False
            raise self._wrong_type(raw, text=True)
        try:
            number = int(text) if self.type == "integer" else float(text)
        except ValueError:
            number = None
        if number is None and self.type == "integer":
            try:
                decimal = float(text)
            except ValueError:
                decimal = math.nan
            if decimal.is_integer():
                number = int(decimal)
        if number is None or not math.isfinite(number):
            raise self._wrong_type(raw, text=True)
        return number

    def is_absent(self, raw: Any, *, text: bool) -> bool:
        """JSON null, or an empty form input for a field that is not a string."""
        return raw is None or (text and self.type != "string" and isinstance(raw, str) and not raw.strip())
