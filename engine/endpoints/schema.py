"""JSON Schema of an endpoint's request body, generated from its fields (the OpenAPI document and the
docs page use the same schemas, so they cannot disagree with what `Endpoint.parse` accepts)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.endpoints.fields import Field

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def field_schema(field: Field) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": field.type}
    if field.description:
        schema["description"] = field.description
    if field.enum is not None:
        schema["enum"] = list(field.enum)
    if field.minimum is not None:
        schema["minimum"] = field.minimum
    if field.maximum is not None:
        schema["maximum"] = field.maximum
    if field.multiple_of is not None:
        schema["multipleOf"] = field.multiple_of
    if field.max_length is not None:
        schema["maxLength"] = field.max_length
    if field.max_tokens is not None:
        schema["x-max-tokens"] = field.max_tokens.maximum
        schema["x-tokenizer"] = field.max_tokens.tokenizer
    if field.required and field.type == "string":
        schema["minLength"] = 1
        schema["pattern"] = r"\S"  # not only whitespace
    if field.has_default:
        schema["default"] = field.default
    if field.example is not None:
        schema["examples"] = [field.example]
    if field.random:
        schema["x-random-when-absent"] = True
    if field.affects_price:
        schema["x-affects-price"] = True
    if field.accepted_only:
        schema["x-accepted-only"] = True
    return schema


def request_schema(
    endpoint_id: str, title: str, description: str, fields: Mapping[str, Field]
) -> dict[str, Any]:
    """Unknown properties are allowed: the endpoint ignores them (and says so), as the APIs it imitates do."""
    schema: dict[str, Any] = {
        "$schema": JSON_SCHEMA_DIALECT,
        "title": f"{title} ({endpoint_id}) input",
        "type": "object",
        "properties": {name: field_schema(field) for name, field in fields.items()},
        "additionalProperties": True,
    }
    if description:
        schema["description"] = description
    required = [name for name, field in fields.items() if field.required]
    if required:
        schema["required"] = required
    return schema
