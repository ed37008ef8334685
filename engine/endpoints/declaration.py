"""Reading a template file's JSON into an Endpoint, checking everything that needs no node definitions.

Unknown keys are refused everywhere (a misspelt "maximun" would otherwise silently drop a bound), and
every message names the file and the field or section, so a broken template is fixed in one look.
The checks against the nodes themselves are in `bindings.py`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TypeGuard, cast

from engine.endpoints.errors import EndpointError
from engine.endpoints.fields import (
    DEFAULT_MAX_LENGTH,
    FIELD_TYPES,
    Derivation,
    Field,
    FieldProblem,
    FieldType,
    InputRef,
    table_key,
)
from engine.endpoints.pricing import PriceTerm, Pricing
from engine.endpoints.spec import APIS, Api, Endpoint, OutputSpec
from engine.endpoints.tokens import TOKENIZERS, Tokenizers, TokenLimit
from engine.graph.types import Prompt
from engine.graph.workflow import is_workflow

TOP_KEYS = frozenset(
    {
        "api",
        "title",
        "description",
        "prompt",
        "output",
        "fields",
        "pricing",
        "response",
        "published",
        "workflow",
    }
)
FIELD_KEYS = frozenset(
    {
        "type",
        "description",
        "required",
        "default",
        "random",
        "minimum",
        "maximum",
        "multiple_of",
        "enum",
        "max_length",
        "max_tokens",
        "tokenizer",
        "affects_price",
        "accepted_only",
        "example",
        "sets",
        "derive",
    }
)
OUTPUT_KEYS = frozenset({"node", "format", "quality"})
PRICING_KEYS = frozenset({"base", "add", "multiply", "minimum"})
TERM_KEYS = frozenset({"field", "per_unit", "divide_by", "table", "per_tokens"})
PRICE_TABLE_LIMIT = 1000
"""Integer fields with more values than this are priced per unit, not by table."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_positive_integer(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


class _Reader:
    def __init__(self, path: Path, tokenizers: Tokenizers) -> None:
        self.path = path
        self.tokenizers = tokenizers

    def fail(self, where: str, message: str) -> NoReturn:
        raise EndpointError(f"{self.path}: {where}: {message}")

    def mapping(self, value: Any, where: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            self.fail(where, "must be an object")
        unknown = sorted(set(value) - allowed)
        if unknown:
            self.fail(where, f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
        return value

    def text(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            self.fail(where, "must be a string")
        return value

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            self.fail(where, "must be true or false")
        return value

    def number(self, value: Any, where: str, *, non_negative: bool = False) -> float:
        if not _is_number(value):
            self.fail(where, "must be a finite number")
        if non_negative and value < 0:
            self.fail(where, "must not be negative (a price never pays the client)")
        return value

    def refs(self, value: Any, where: str) -> tuple[InputRef, ...]:
        if not isinstance(value, list) or not all(
            isinstance(ref, list) and len(ref) == 2 and all(isinstance(part, str) for part in ref)
            for ref in value
        ):
            self.fail(where, 'must be a list of ["node id", "input name"] pairs')
        return tuple(InputRef(node, name) for node, name in value)

    def apis(self, value: Any) -> tuple[Api, ...]:
        """One style ("segmind") or several (["segmind", "fal"]): the endpoint is served in each."""
        apis = tuple(value) if isinstance(value, list) else (value,)
        if not apis or any(api not in APIS for api in apis) or len(set(apis)) != len(apis):
            self.fail("api", f"must be one of {', '.join(APIS)}, or a list of them without repeats")
        return cast(tuple[Api, ...], apis)

    def graph(self, value: Any) -> Prompt:
        if not isinstance(value, Mapping) or not value:
            self.fail("prompt", "must be a ComfyUI API-format graph (node id -> {class_type, inputs})")
        for node_id, node in value.items():
            if (
                not isinstance(node, Mapping)
                or not isinstance(node.get("class_type"), str)
                or not isinstance(node.get("inputs"), Mapping)
            ):
                self.fail(
                    f"node {node_id}", "must be an object with a class_type string and an inputs object"
                )
        return cast(Prompt, {str(node_id): dict(node) for node_id, node in value.items()})

    def field(self, name: str, value: Any) -> Field:
        where = f"field '{name}'"
        spec = self.mapping(value, where, FIELD_KEYS)
        kind = spec.get("type")
        if kind not in FIELD_TYPES:
            self.fail(where, f"type must be one of {', '.join(FIELD_TYPES)}")
        kind = cast(FieldType, kind)
        flags = {
            key: self.flag(spec.get(key, False), f"{where}: {key}")
            for key in ("required", "random", "affects_price", "accepted_only")
        }
        bounds: dict[str, Any] = {}
        for key in ("minimum", "maximum"):
            if key in spec:
                if kind not in ("integer", "number"):
                    self.fail(where, f"{key} applies to integer and number fields only")
                bound = self.number(spec[key], f"{where}: {key}")
                if kind == "integer" and not isinstance(bound, int):
                    self.fail(where, f"{key} of an integer field must be an integer")
                bounds[key] = bound
        if "minimum" in bounds and "maximum" in bounds and bounds["minimum"] > bounds["maximum"]:
            self.fail(where, "minimum is greater than maximum")
        multiple_of = spec.get("multiple_of")
        if multiple_of is not None and (
            kind != "integer"
            or not isinstance(multiple_of, int)
            or isinstance(multiple_of, bool)
            or multiple_of < 1
        ):
            self.fail(where, "multiple_of must be a positive integer, on an integer field")
        max_length = spec.get("max_length", DEFAULT_MAX_LENGTH if kind == "string" else None)
        if max_length is not None and (kind != "string" or not _is_positive_integer(max_length)):
            self.fail(where, "max_length must be a positive integer, on a string field")
        max_tokens = self.token_limit(spec, kind, where)
        if flags["random"] and (kind != "integer" or flags["required"] or "default" in spec):
            self.fail(where, "random applies to an optional integer field without a default (a seed)")
        if flags["required"] and "default" in spec:
            self.fail(where, "a required field cannot have a default")
        if flags["accepted_only"] and ("sets" in spec or "derive" in spec):
            self.fail(where, "an accepted_only field sets nothing, so it cannot have sets or derive")
        field = Field(
            name=name,
            type=kind,
            description=self.text(spec.get("description", ""), f"{where}: description"),
            required=flags["required"],
            random=flags["random"],
            minimum=bounds.get("minimum"),
            maximum=bounds.get("maximum"),
            multiple_of=multiple_of,
            max_length=max_length,
            affects_price=flags["affects_price"],
            accepted_only=flags["accepted_only"],
            sets=self.refs(spec.get("sets", []), f"{where}: sets"),
        )
        enum = spec.get("enum")
        if enum is not None:
            if not isinstance(enum, list) or not enum:
                self.fail(where, "enum must be a non-empty list")
            values = [self.typed(field, item, f"{where}: enum value {item!r}") for item in enum]
            if len({table_key(v) for v in values}) != len(values):
                self.fail(where, "enum lists a value twice")
            field = replace(field, enum=tuple(values))
        for key in ("default", "example"):
            if key in spec:
                value = self.typed(field, spec[key], f"{where}: {key}")
                error = field.check(value)
                if error is not None:
                    self.fail(where, f"{key} {value!r} is invalid: {error['message']}")
                field = replace(field, **{key: value})
        if "derive" in spec:
            field = replace(field, derive=self.derivation(field, spec["derive"], where))
        # set last: the checks above read no tokenizer; load.py checks default and example in tokens
        return replace(field, max_tokens=max_tokens)

    def token_limit(self, spec: Mapping[str, Any], kind: FieldType, where: str) -> TokenLimit | None:
        if "max_tokens" not in spec and "tokenizer" not in spec:
            return None
        maximum, tokenizer = spec.get("max_tokens"), spec.get("tokenizer")
        if kind != "string" or not _is_positive_integer(maximum) or tokenizer not in TOKENIZERS:
            self.fail(
                where,
                "max_tokens must be a positive integer, on a string field, with a tokenizer "
                f"({', '.join(TOKENIZERS)}) that counts them",
            )
        return TokenLimit(tokenizer, maximum, self.tokenizers)

    def typed(self, field: Field, value: Any, where: str) -> Any:
        """A declared value of the field's JSON type (its bounds are checked by the caller)."""
        unbounded = replace(field, enum=None, minimum=None, maximum=None, multiple_of=None, max_length=None)
        try:
            return unbounded.parse(value, text=False)
        except FieldProblem as problem:
            self.fail(where, problem.error["message"])

    def derivation(self, field: Field, value: Any, where: str) -> Derivation:
        spec = self.mapping(value, f"{where}: derive", frozenset({"sets", "table"}))
        if field.enum is None:
            self.fail(where, "derive needs an enum (each value picks a row of the table)")
        sets = spec.get("sets")
        if not isinstance(sets, Mapping) or not sets:
            self.fail(where, "derive.sets must map at least one component name to the inputs it sets")
        targets = {
            component: self.refs(refs, f"{where}: derive.sets.{component}")
            for component, refs in sets.items()
        }
        table = spec.get("table")
        if not isinstance(table, Mapping):
            self.fail(where, "derive.table must map each enum value to a row")
        wanted = {table_key(v) for v in field.enum}
        if set(table) != wanted:
            missing, extra = sorted(wanted - set(table)), sorted(set(table) - wanted)
            self.fail(
                where, f"derive.table rows must match the enum (missing: {missing}, not in enum: {extra})"
            )
        for key, row in table.items():
            if not isinstance(row, Mapping) or set(row) != set(targets):
                self.fail(where, f"derive.table row {key!r} must give exactly {', '.join(sorted(targets))}")
        return Derivation(targets=targets, table={key: dict(row) for key, row in table.items()})

    def output(self, value: Any, fields: Mapping[str, Field]) -> OutputSpec:
        spec = self.mapping(value, "output", OUTPUT_KEYS)
        node = self.text(spec.get("node"), "output: node")
        image_format, format_field = self.output_source(spec.get("format"), "format", str, fields)
        if image_format is None and format_field is None:
            self.fail("output", 'format is required (a format name, or {"field": name})')
        quality, quality_field = self.output_source(spec.get("quality"), "quality", int, fields)
        return OutputSpec(node, image_format, format_field, quality, quality_field)

    def output_source(
        self, value: Any, key: str, kind: type, fields: Mapping[str, Field]
    ) -> tuple[Any, str | None]:
        where = f"output: {key}"
        if value is None:
            return None, None
        if isinstance(value, Mapping):
            name = self.text(self.mapping(value, where, frozenset({"field"})).get("field"), f"{where}: field")
            if name not in fields:
                self.fail(where, f"names field '{name}', which is not declared")
            if fields[name].sets or fields[name].derive or fields[name].accepted_only:
                self.fail(f"field '{name}'", f"is the output {key}, so it cannot also set node inputs")
            return None, name
        if not isinstance(value, kind) or isinstance(value, bool):
            self.fail(where, f'must be a {kind.__name__} or {{"field": name}}')
        return value, None

    def pricing(self, value: Any, fields: Mapping[str, Field]) -> Pricing:
        spec = self.mapping(value, "pricing", PRICING_KEYS)
        pricing = Pricing(
            base=self.number(spec.get("base", 0), "pricing: base", non_negative=True),
            add=tuple(self.terms(spec.get("add", []), "add", fields)),
            multiply=tuple(self.terms(spec.get("multiply", []), "multiply", fields)),
            minimum=self.number(spec.get("minimum", 0), "pricing: minimum", non_negative=True),
        )
        unpriced = [
            name for name, field in fields.items() if field.affects_price and name not in pricing.fields
        ]
        if unpriced:
            self.fail(f"field '{unpriced[0]}'", "is marked affects_price but no pricing term uses it")
        return pricing

    def terms(self, value: Any, section: str, fields: Mapping[str, Field]) -> list[PriceTerm]:
        if not isinstance(value, list):
            self.fail(f"pricing: {section}", "must be a list of terms")
        terms = []
        for index, item in enumerate(value):
            where = f"pricing: {section}[{index}]"
            spec = self.mapping(item, where, TERM_KEYS)
            name = self.text(spec.get("field"), f"{where}: field")
            field = fields.get(name)
            if field is None:
                self.fail(where, f"names field '{name}', which is not declared")
            if not field.affects_price:
                self.fail(f"field '{name}'", "is used in pricing, so it must be marked affects_price")
            if "table" in spec and ("per_unit" in spec or "divide_by" in spec or "per_tokens" in spec):
                self.fail(where, "give a table, or per_unit with divide_by or per_tokens, not both")
            if "table" in spec:
                terms.append(PriceTerm(name, table=self.price_table(field, spec["table"], where)))
                continue
            if "per_tokens" in spec:
                terms.append(self.token_term(field, spec, where))
                continue
            if field.type not in ("integer", "number"):
                self.fail(f"field '{name}'", "is not a number, so its price term needs a table")
            per_unit = self.number(spec.get("per_unit", 1), f"{where}: per_unit", non_negative=True)
            divide_by = self.number(spec.get("divide_by", 1), f"{where}: divide_by")
            if divide_by <= 0:
                self.fail(where, "divide_by must be greater than 0")
            if field.minimum is None or field.minimum < 0:
                self.fail(f"field '{name}'", "is priced per unit, so it needs a minimum of 0 or more")
            terms.append(PriceTerm(name, per_unit=per_unit, divide_by=divide_by))
        return terms

    def token_term(self, field: Field, spec: Mapping[str, Any], where: str) -> PriceTerm:
        """Per started block of tokens: only for a field bounded in tokens, so the price is bounded too."""
        if field.max_tokens is None:
            self.fail(f"field '{field.name}'", "is priced per_tokens, so it needs max_tokens and a tokenizer")
        if "divide_by" in spec:
            self.fail(where, "give per_tokens or divide_by, not both")
        per_tokens = spec["per_tokens"]
        if not _is_positive_integer(per_tokens):
            self.fail(where, "per_tokens must be a positive integer (tokens per priced block)")
        per_unit = self.number(spec.get("per_unit", 1), f"{where}: per_unit", non_negative=True)
        return PriceTerm(field.name, per_unit=per_unit, per_tokens=per_tokens, tokens=field.max_tokens)

    def price_table(self, field: Field, value: Any, where: str) -> dict[str, float]:
        if field.enum is not None:
            wanted = {table_key(v) for v in field.enum}
        elif field.type == "boolean":
            wanted = {"true", "false"}
        elif (
            field.type == "integer"
            and field.minimum is not None
            and field.maximum is not None
            and field.maximum - field.minimum < PRICE_TABLE_LIMIT
        ):
            wanted = {str(v) for v in range(int(field.minimum), int(field.maximum) + 1)}
        else:
            self.fail(
                f"field '{field.name}'",
                f"a price table needs an enum, a boolean or at most {PRICE_TABLE_LIMIT} integers",
            )
        if not isinstance(value, Mapping) or set(value) != wanted:
            self.fail(where, f"table must price exactly these values: {', '.join(sorted(wanted))}")
        return {
            key: self.number(amount, f"{where}: table {key}", non_negative=True)
            for key, amount in value.items()
        }


def read_endpoint(endpoint_id: str, path: Path, data: Any, tokenizers: Tokenizers) -> Endpoint:
    """The endpoint a template file declares, checked for shape and internal consistency; prompts
    bounded in tokens count them with `tokenizers` (nothing is read from them here)."""
    reader = _Reader(path, tokenizers)
    spec = reader.mapping(data, "the file", TOP_KEYS)
    apis = reader.apis(spec.get("api"))
    graph = reader.graph(spec.get("prompt"))
    declared = spec.get("fields")
    if not isinstance(declared, Mapping) or not declared:
        reader.fail("fields", "must be an object declaring at least one request field")
    fields = {name: reader.field(name, value) for name, value in declared.items()}
    seeds = [name for name, field in fields.items() if field.random]
    if len(seeds) > 1:
        reader.fail(
            f"field '{seeds[1]}'", f"only one field can be random (the seed); '{seeds[0]}' already is"
        )
    response = reader.mapping(spec.get("response", {}), "response", frozenset({"echo"}))
    echo = response.get("echo", [])
    if not isinstance(echo, list) or not all(isinstance(name, str) for name in echo):
        reader.fail("response: echo", "must be a list of field names")
    for name in echo:
        if name not in fields:
            reader.fail("response: echo", f"names field '{name}', which is not declared")
    if "workflow" in spec and not is_workflow(spec["workflow"]):
        reader.fail("workflow", "must be an editor (UI-format) workflow: an object with nodes and links")
    return Endpoint(
        id=endpoint_id,
        apis=apis,
        title=reader.text(spec.get("title", endpoint_id), "title"),
        description=reader.text(spec.get("description", ""), "description"),
        fields=fields,
        source=path,
        graph=graph,
        output=reader.output(spec.get("output"), fields),
        pricing=reader.pricing(spec.get("pricing", {}), fields),
        echo=tuple(echo),
        published=reader.flag(spec.get("published", False), "published"),
        template=spec,
    )
