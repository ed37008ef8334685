"""Request fields: their declared type and bounds, and turning a client's value into a checked one.

Two encodings reach an endpoint. A JSON body carries typed values, and those types are the contract:
`"steps": "25"` in JSON is refused (the schema says integer; a string there is a client bug more often
than not), with two tolerances JSON itself forces on us: an integral number such as `25.0` is an integer
(some JSON writers emit every number as a float), and `null` means "not sent". A form (multipart or
urlencoded, as Segmind's JavaScript sample sends) carries only text, so there every value is parsed from
its string: "25", "1.73", "true"/"false"/"1"/"0", and an empty string for a non-string field means
"not sent" (an empty form input). A non-text value in a form (an uploaded file) is judged as JSON.

A number too large for Python's int or float conversions (1e400, or over 4,300 digits) is held as an
exact Decimal until its bound refuses it, so the answer names the bound rather than failing on the
conversion; a field declaring no bound is bounded by what its type can carry (UNBOUNDED_INTEGER,
the largest finite double).
"""

from __future__ import annotations

import math
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
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

UNBOUNDED_INTEGER = 2**64 - 1
"""The magnitude bound of an integer field that declares none: the widest integer ComfyUI's INT inputs
take (a seed's maximum), and far below where storing and echoing an integer gets costly."""

_ECHO_LIMIT = 100
"""Longer received strings (and numbers' texts) are cut in error reports: the client already has them."""

Number = int | float | Decimal


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


def _cut(text: str) -> str:
    return text[:_ECHO_LIMIT] + "…" if len(text) > _ECHO_LIMIT else text


def _number_text(value: Number) -> str:
    """How a number reads in JSON, NaN and Infinity spelt as JavaScript spells them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, int):
        return str(Decimal(value))  # str(int) refuses over 4,300 digits
    return str(value) if isinstance(value, Decimal) else repr(value)


def _echo(value: Any) -> Any:
    """What was received, as strict JSON can carry it: a number JSON cannot hold comes back as text."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, int | float | Decimal):
        text = _number_text(value)
        exact = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
        return value if exact and len(text) <= _ECHO_LIMIT else _cut(text)
    return type(value).__name__


def is_unicode_text(text: str) -> bool:
    """False for a string holding a lone surrogate ("\\ud800" is valid JSON but not Unicode text; it is
    also what undecodable bytes in a header become)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
        if self.type == "integer":
            return int(value)
        if self.type == "number":
            return float(value)
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
        if self.type == "string" and not is_unicode_text(value):
            position = next(index for index, char in enumerate(value) if not is_unicode_text(char))
            return {
                "field": self.name,
                "code": "unicode",
                "message": (
                    f"{self.name} must be Unicode text: character {position} is a lone surrogate "
                    f"({ascii(value[position])[1:-1]} without its pair), which UTF-8 cannot encode"
                ),
            }
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

    def _bounds(self) -> tuple[int | float, int | float]:
        """The declared bounds, a missing one replaced by the extreme the field's type can carry."""
        limit = UNBOUNDED_INTEGER if self.type == "integer" else sys.float_info.max
        return (
            -limit if self.minimum is None else self.minimum,
            limit if self.maximum is None else self.maximum,
        )

    def _check_number(self, value: Number) -> FieldError | None:
        """Exact comparisons (int, float and Decimal compare exactly in Python), before any conversion."""
        low, high = self._bounds()
        if value < low or value > high:
            error: FieldError = {"field": self.name, "code": "range", "message": "", "received": _echo(value)}
            if value < low and self.maximum is None and self.minimum is not None:
                error["message"] = f"{self.name} must be at least {format_number(low)}"
            elif value > high and self.minimum is None and self.maximum is not None:
                error["message"] = f"{self.name} must be at most {format_number(high)}"
            else:
                error["message"] = (
                    f"{self.name} must be between {format_number(low)} and {format_number(high)}"
                )
            if self.minimum is not None or value < low:  # the implicit bound only where it was broken
                error["minimum"] = low
            if self.maximum is not None or value > high:
                error["maximum"] = high
            return error
        if self.multiple_of and value % self.multiple_of:
            return {
                "field": self.name,
                "code": "multiple_of",
                "message": f"{self.name} must be a multiple of {self.multiple_of}",
                "multiple_of": self.multiple_of,
                "received": _echo(value),
            }
        return None

    def _wrong_type(self, raw: Any, *, text: bool = False) -> FieldProblem:
        if text:
            got = f'"{_echo(raw)}"'
        elif isinstance(raw, str):
            got = f'the string "{_echo(raw)}"'
        elif isinstance(raw, bool):
            got = "true" if raw else "false"
        elif isinstance(raw, int | float | Decimal):
            got = _cut(_number_text(raw))
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
        """The value as its exact number (converted to int or float once its bounds are checked)."""
        if self.type == "integer":
            if isinstance(raw, int) and not isinstance(raw, bool):
                return raw
            if isinstance(raw, float) and raw.is_integer():
                return int(raw)
            if isinstance(raw, Decimal) and _is_integral(raw):
                return raw
        elif self.type == "number":
            if isinstance(raw, int | Decimal) and not isinstance(raw, bool) and _is_finite(raw):
                return raw
            if isinstance(raw, float) and math.isfinite(raw):
                return raw
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
            number = Decimal(text)
        except InvalidOperation:
            raise self._wrong_type(raw, text=True) from None
        if self.type == "integer":
            if not _is_integral(number):
                raise self._wrong_type(raw, text=True)
            return int(number) if number.adjusted() < sys.int_info.default_max_str_digits else number
        if not number.is_finite():
            raise self._wrong_type(raw, text=True)
        rounded = float(number)  # as JSON's "1.73" is read, so a form and a JSON body agree
        return rounded if math.isfinite(rounded) else number

    def is_absent(self, raw: Any, *, text: bool) -> bool:
        """JSON null, or an empty form input for a field that is not a string."""
        return raw is None or (text and self.type != "string" and isinstance(raw, str) and not raw.strip())


def _is_finite(value: int | Decimal) -> bool:
    return isinstance(value, int) or value.is_finite()


def _is_integral(value: Decimal) -> bool:
    return value.is_finite() and value == value.to_integral_value()
