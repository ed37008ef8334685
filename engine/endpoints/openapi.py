"""The OpenAPI 3.1 document of the served endpoints, generated from their templates.

Request bodies are the endpoints' JSON schemas (the same ones `Endpoint.json_schema` gives), so the
document always matches what the server accepts. Segmind-style endpoints get their synchronous
`/v1/<id>` route (image bytes) and the `/v2` queue; fal-style apps get fal's queue routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from engine.endpoints.schema import field_schema
from engine.endpoints.spec import Endpoint
from engine.endpoints.tokens import TOKENIZERS
from engine.nodes.save_image_as import CONTENT_TYPES

OPENAPI_VERSION = "3.1.0"

SEGMIND_ERRORS = {
    "400": "Invalid parameters: the body names each field and the bound it broke",
    "401": "Missing or invalid API key (x-api-key header)",
    "404": "Unknown endpoint",
    "405": "Method not allowed",
    "406": "Not enough credits",
    "422": "The request failed while running; the body carries the error",
    "429": "Too many requests",
    "500": "Server error",
}
QUEUE_ERRORS = {
    "401": "Missing or invalid API key",
    "404": "Unknown or expired request id (results are kept for one hour)",
    "429": "Too many requests",
    "500": "Server error",
}
FAL_ERRORS = {
    "400": "The body is not a JSON object",
    "401": "Missing or invalid API key (Authorization: Key <key>)",
    "404": "Unknown app",
    "429": "Too many requests",
    "500": "Server error",
}

SEGMIND_SECURITY = [{"segmindKey": []}]
FAL_SECURITY = [{"falKey": []}]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def schema_name(endpoint_id: str, suffix: str) -> str:
    """Component names allow only letters, digits, '.', '-' and '_' (so '/' becomes '.')."""
    return f"{re.sub(r'[^A-Za-z0-9._-]', '.', endpoint_id)}.{suffix}"


def _json(schema: Mapping[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": dict(schema)}}}


def _errors(codes: Mapping[str, str]) -> dict[str, Any]:
    return {code: _json(_ref("Error"), description) for code, description in codes.items()}


def _request_id() -> dict[str, Any]:
    return {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _common_schemas() -> dict[str, Any]:
    number = {"type": "number"}
    return {
        "FieldError": {
            "type": "object",
            "required": ["field", "code", "message"],
            "properties": {
                "field": {"type": "string", "description": "The request field at fault."},
                "code": {
                    "type": "string",
                    "enum": ["required", "type", "range", "multiple_of", "enum", "max_length", "max_tokens"],
                },
                "message": {"type": "string"},
                "received": {"description": "The value sent (long strings are cut)."},
                "expected": {"type": "string", "enum": ["integer", "number", "string", "boolean"]},
                "minimum": number,
                "maximum": number,
                "multiple_of": {"type": "integer"},
                "allowed": {"type": "array"},
                "max_length": {"type": "integer"},
                "received_length": {"type": "integer"},
                "max_tokens": {"type": "integer"},
                "received_tokens": {"type": "integer"},
                "tokenizer": {"type": "string", "enum": list(TOKENIZERS)},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "What went wrong, in a sentence."},
                "errors": {"type": "array", "items": _ref("FieldError")},
            },
        },
    }


def _segmind_schemas() -> dict[str, Any]:
    status = {"type": "string", "enum": ["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]}
    url = {"type": "string", "format": "uri"}
    return {
        "SegmindSubmitted": {
            "type": "object",
            "required": ["request_id", "status_url", "response_url"],
            "properties": {"request_id": {"type": "string"}, "status_url": url, "response_url": url},
        },
        "SegmindStatus": {
            "type": "object",
            "required": ["status"],
            "properties": {"status": status, "error": {"type": "string", "description": "When FAILED."}},
        },
        "SegmindResult": {
            "type": "object",
            "required": ["status", "output", "metrics"],
            "properties": {
                "status": status,
                "output": {"description": "URL(s) of the generated image(s)."},
                "metrics": {
                    "type": "object",
                    "properties": {
                        "inference_time": {"type": "number", "description": "Server compute seconds."}
                    },
                },
                "error": {"type": "string"},
            },
        },
    }


def _fal_schemas() -> dict[str, Any]:
    url = {"type": "string", "format": "uri"}
    return {
        "FalSubmitted": {
            "type": "object",
            "required": ["request_id", "status_url", "response_url", "cancel_url"],
            "properties": {
                "request_id": {"type": "string"},
                "status_url": url,
                "response_url": url,
                "cancel_url": url,
                "queue_position": {"type": "integer"},
            },
        },
        "FalStatus": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]},
                "queue_position": {"type": "integer"},
                "logs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"message": {"type": "string"}, "timestamp": {"type": "string"}},
                    },
                },
            },
        },
        "FalValidationError": {
            "type": "object",
            "required": ["detail"],
            "properties": {
                "detail": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["loc", "msg", "type"],
                        "properties": {
                            "loc": {"type": "array", "items": {"type": "string"}},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                            "ctx": {"type": "object", "description": "The bound broken, as in FieldError."},
                        },
                    },
                }
            },
        },
        "FalImage": {
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": url,
                "content_type": {"type": "string"},
                "file_name": {"type": "string"},
                "file_size": {"type": "integer"},
                "width": {"type": "integer"},
                "height": {"type": "integer"},
            },
        },
    }


def content_types(endpoint: Endpoint) -> list[str]:
    """The image types a request to this endpoint can be answered with, in the order first met."""
    output = endpoint.output
    if output.format_field:
        formats: Iterable[Any] = endpoint.fields[output.format_field].enum or ()
    else:
        formats = [output.format]
    return list(dict.fromkeys(CONTENT_TYPES[f] for f in formats))


def _operation_notes(endpoint: Endpoint) -> dict[str, Any]:
    notes: dict[str, Any] = {"x-cost": endpoint.pricing.describe()}
    if endpoint.unavailable:
        notes["x-unavailable"] = endpoint.unavailable
    return notes


def _description(endpoint: Endpoint) -> str:
    text = endpoint.description
    if endpoint.unavailable:
        text = f"{text}\n\nNot available on this server: {endpoint.unavailable}.".strip()
    return text


def _segmind_paths(endpoint: Endpoint, input_ref: dict[str, str]) -> dict[str, Any]:
    body = {
        "required": True,
        "description": "JSON with typed values, or a form (multipart or urlencoded) whose values are text.",
        "content": {
            "application/json": {"schema": input_ref},
            "multipart/form-data": {"schema": input_ref},
            "application/x-www-form-urlencoded": {"schema": input_ref},
        },
    }
    image = {
        "description": "The generated image",
        "headers": {
            "x-remaining-credits": {
                "schema": {"type": "number"},
                "description": "Credits left after this call.",
            }
        },
        "content": {
            media: {"schema": {"type": "string", "contentMediaType": media}}
            for media in content_types(endpoint)
        },
    }
    tag = [endpoint.id]
    return {
        f"/v1/{endpoint.id}": {
            "post": {
                "operationId": schema_name(endpoint.id, "v1"),
                "summary": f"{endpoint.title} (synchronous)",
                "description": _description(endpoint),
                "tags": tag,
                "security": SEGMIND_SECURITY,
                "requestBody": body,
                "responses": {"200": image, **_errors(SEGMIND_ERRORS)},
                **_operation_notes(endpoint),
            }
        },
        f"/v2/{endpoint.id}": {
            "post": {
                "operationId": schema_name(endpoint.id, "v2"),
                "summary": f"{endpoint.title} (queued)",
                "description": _description(endpoint),
                "tags": tag,
                "security": SEGMIND_SECURITY,
                "requestBody": body,
                "responses": {
                    "200": _json(
                        _ref("SegmindSubmitted"), "Queued; poll status_url, then fetch response_url"
                    ),
                    **_errors({k: v for k, v in SEGMIND_ERRORS.items() if k != "422"}),
                },
                **_operation_notes(endpoint),
            }
        },
    }


def _segmind_queue_paths() -> dict[str, Any]:
    failed = _json(_ref("SegmindStatus"), "The request FAILED; the body carries the error")
    return {
        "/v2/requests/{request_id}/status": {
            "get": {
                "operationId": "segmind.status",
                "summary": "Status of a queued request",
                "tags": ["v2 queue"],
                "security": SEGMIND_SECURITY,
                "parameters": [_request_id()],
                "responses": {
                    "200": _json(_ref("SegmindStatus"), "QUEUED, PROCESSING or COMPLETED"),
                    "422": failed,
                    **_errors(QUEUE_ERRORS),
                },
            }
        },
        "/v2/requests/{request_id}": {
            "get": {
                "operationId": "segmind.result",
                "summary": "Result of a queued request",
                "tags": ["v2 queue"],
                "security": SEGMIND_SECURITY,
                "parameters": [_request_id()],
                "responses": {
                    "200": _json(_ref("SegmindResult"), "The final body"),
                    "422": _json(_ref("SegmindResult"), "The request FAILED"),
                    **_errors(QUEUE_ERRORS),
                },
            }
        },
    }


def _fal_output_schema(endpoint: Endpoint) -> dict[str, Any]:
    properties: dict[str, Any] = {"images": {"type": "array", "items": _ref("FalImage")}}
    for name in endpoint.echo:
        properties[name] = field_schema(endpoint.fields[name])
    return {"type": "object", "required": ["images", *endpoint.echo], "properties": properties}


def _fal_paths(endpoint: Endpoint, input_ref: dict[str, str], output_ref: dict[str, str]) -> dict[str, Any]:
    tag = [endpoint.id]
    base = f"/{endpoint.id}/requests/{{request_id}}"
    webhook = {
        "name": "fal_webhook",
        "in": "query",
        "required": False,
        "description": "URL called with the result when the request completes.",
        "schema": {"type": "string", "format": "uri"},
    }
    logs = {
        "name": "logs",
        "in": "query",
        "required": False,
        "description": "1 to include the request's log lines.",
        "schema": {"type": "integer", "enum": [0, 1]},
    }
    return {
        f"/{endpoint.id}": {
            "post": {
                "operationId": schema_name(endpoint.id, "submit"),
                "summary": f"{endpoint.title}: queue a request",
                "description": _description(endpoint),
                "tags": tag,
                "security": FAL_SECURITY,
                "parameters": [webhook],
                "requestBody": {"required": True, "content": {"application/json": {"schema": input_ref}}},
                "responses": {
                    "200": _json(_ref("FalSubmitted"), "Queued"),
                    "422": _json(
                        _ref("FalValidationError"), "Input that does not fit: each field and its bound"
                    ),
                    **_errors(FAL_ERRORS),
                },
                **_operation_notes(endpoint),
            }
        },
        f"{base}/status": {
            "get": {
                "operationId": schema_name(endpoint.id, "status"),
                "summary": f"{endpoint.title}: request status",
                "tags": tag,
                "security": FAL_SECURITY,
                "parameters": [_request_id(), logs],
                "responses": {
                    "200": _json(_ref("FalStatus"), "Where the request is"),
                    **_errors(QUEUE_ERRORS),
                },
            }
        },
        base: {
            "get": {
                "operationId": schema_name(endpoint.id, "result"),
                "summary": f"{endpoint.title}: request result",
                "tags": tag,
                "security": FAL_SECURITY,
                "parameters": [_request_id()],
                "responses": {"200": _json(output_ref, "The output"), **_errors(QUEUE_ERRORS)},
            }
        },
        f"{base}/cancel": {
            "put": {
                "operationId": schema_name(endpoint.id, "cancel"),
                "summary": f"{endpoint.title}: cancel a request",
                "tags": tag,
                "security": FAL_SECURITY,
                "parameters": [_request_id()],
                "responses": {
                    "202": _json(
                        {"type": "object", "properties": {"status": {"type": "string"}}},
                        "Cancellation requested",
                    ),
                    "400": _json(
                        {"type": "object", "properties": {"status": {"type": "string"}}},
                        "Already completed",
                    ),
                    **_errors(QUEUE_ERRORS),
                },
            }
        },
    }


def build_openapi(endpoints: Mapping[str, Endpoint], server_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for these endpoints as served at `server_url`."""
    paths: dict[str, Any] = {}
    schemas = _common_schemas()
    apis = {endpoint.api for endpoint in endpoints.values()}
    if "segmind" in apis:
        schemas.update(_segmind_schemas())
    if "fal" in apis:
        schemas.update(_fal_schemas())
    for endpoint in endpoints.values():
        input_name = schema_name(endpoint.id, "Input")
        request = endpoint.json_schema()
        request.pop("$schema", None)
        schemas[input_name] = request
        if endpoint.api == "segmind":
            paths.update(_segmind_paths(endpoint, _ref(input_name)))
        else:
            output_name = schema_name(endpoint.id, "Output")
            schemas[output_name] = _fal_output_schema(endpoint)
            paths.update(_fal_paths(endpoint, _ref(input_name), _ref(output_name)))
    if "segmind" in apis:
        paths.update(_segmind_queue_paths())
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Image generation API",
            "version": "1",
            "description": "Segmind- and fal-style endpoints, each running a ComfyUI graph.",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "segmindKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "falKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "The key prefixed by 'Key ': `Authorization: Key <your key>`.",
                },
            },
        },
    }
