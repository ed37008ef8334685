"""The OpenAPI 3.1 document of the server: every route, with each status and content type it answers.

Request bodies are the endpoints' JSON schemas (the same ones `Endpoint.json_schema` gives), so the
document always matches what the server accepts. Segmind-style endpoints get their synchronous
`/v1/<id>` route (image bytes) and the `/v2` queue; fal-style apps get fal's queue routes; the service
routes (health, readiness, metrics, the catalogue, this document, the docs page) and output files come
with every document. The responses are the handlers' own (engine/api): the fuzz test
(tests/api/test_fuzz.py) holds the server to this document, status, content type, headers and body.
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

PRIVATE: list[dict[str, list[str]]] = [{"segmindKey": []}, {"falKey": []}]
"""Either header carries the key on every route; only a server started with --open-access needs none."""
PUBLIC: list[dict[str, list[str]]] = []

SEGMIND_STATUSES = ["QUEUED", "PROCESSING", "COMPLETED", "FAILED"]
JOB_STATUSES = [*SEGMIND_STATUSES, "CANCELLED"]
MAX_IDEMPOTENCY_KEY = 255
"""The bound engine/api/submit.py enforces (this layer cannot import the HTTP one)."""

SUBMIT_ERRORS = {
    "400": "The body or a parameter is invalid: the body names the field and the bound it broke",
    "401": "Missing or invalid API key",
    "406": "Not enough credits for this request",
    "413": "The body is larger than the server accepts",
    "415": "The body is neither JSON nor a form",
}
LOOKUP_ERRORS = {
    "401": "Missing or invalid API key",
    "404": "Unknown request id, another key's request, or expired (results are kept for an hour)",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def schema_name(endpoint_id: str, suffix: str) -> str:
    """Component names allow only letters, digits, '.', '-' and '_' (so '/' becomes '.')."""
    return f"{re.sub(r'[^A-Za-z0-9._-]', '.', endpoint_id)}.{suffix}"


def _json(
    schema: Mapping[str, Any], description: str, headers: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": dict(schema)}},
    }
    if headers:
        response["headers"] = dict(headers)
    return response


def _errors(codes: Mapping[str, str]) -> dict[str, Any]:
    return {code: _json(_ref("Error"), description) for code, description in codes.items()}


def _header(schema: Mapping[str, Any], description: str, *, required: bool = False) -> dict[str, Any]:
    return {"schema": dict(schema), "description": description, "required": required}


RETRY_AFTER = _header({"type": "string", "pattern": "^[0-9]+$"}, "Seconds to wait before trying again.")
REQUEST_HEADERS = {
    "x-request-id": _header({"type": "string"}, "The request's id.", required=True),
    "x-request-cost": _header({"type": "string"}, "What the request costs, in credits.", required=True),
}
SUBMITTED_HEADERS = {
    **REQUEST_HEADERS,
    "Idempotent-Replayed": _header(
        {"type": "string", "enum": ["true"]}, "The Idempotency-Key was seen before: this is that request."
    ),
    "x-remaining-credits": _header({"type": "string"}, "Credits left on the key (when keys are in use)."),
}


def _submit_responses(
    accepted: dict[str, Any], *, validation: dict[str, Any] | None = None
) -> dict[str, Any]:
    responses = {"200": accepted, **_errors(SUBMIT_ERRORS)}
    if validation is not None:
        responses["422"] = validation
    responses["429"] = _json(
        _ref("Error"), "The key's requests per minute are spent", {"Retry-After": RETRY_AFTER}
    )
    responses["503"] = _json(
        _ref("Error"),
        "The endpoint is unavailable (its model is missing), or the output storage is full",
        {"Retry-After": RETRY_AFTER},
    )
    return responses


def _request_id() -> dict[str, Any]:
    return {"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _idempotency_key() -> dict[str, Any]:
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "A request sent again with the same key returns the first one, not a new one.",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_IDEMPOTENCY_KEY},
    }


def _webhook(name: str, where: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": False,
        "description": "An http(s) URL called with the result when the request finishes.",
        "schema": {"type": "string", "format": "uri"},
    }


def _request_body(input_ref: dict[str, str]) -> dict[str, Any]:
    """Each form gets a schema of its own: a generated client picks the body's encoding by its class, and
    the same `$ref` thrice gives one class, sent as JSON, multipart and urlencoded at once. An `allOf` of
    the input alone is read as the input itself, hence the second, empty, object member."""
    return {
        "required": True,
        "description": "JSON with typed values, or a form (multipart or urlencoded) whose values are text.",
        "content": {
            "application/json": {"schema": input_ref},
            "multipart/form-data": {"schema": {"allOf": [input_ref, {"type": "object"}]}},
            "application/x-www-form-urlencoded": {"schema": {"allOf": [input_ref, {"type": "object"}]}},
        },
    }


SERVER_SENT_EVENT = {
    "type": "object",
    "description": "One event, as tools that read the stream check each one.",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "description": "status, progress, log or preview."},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}
EVENT_STREAM = {
    "anyOf": [
        SERVER_SENT_EVENT,
        {
            "type": "string",
            "description": "The stream's whole text, as tools that cannot split it read it.",
        },
    ]
}
"""OpenAPI 3.1 cannot tell a stream's events from its body: a schema of one event alone has clients
generated from this document (openapi-python-client) parse the whole stream as that object, and fail."""


def _event_stream(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/event-stream": {"schema": EVENT_STREAM}}}


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
                "allowed": {"type": "array", "items": {}},
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
            "description": "Every error answer; some carry more (the field at fault, the request id).",
            "properties": {
                "error": {"type": "string", "description": "What went wrong, in a sentence."},
                "errors": {"type": "array", "items": _ref("FieldError")},
                "field": {"type": "string", "description": "The parameter at fault, outside the body."},
                "request_id": {"type": "string"},
                "status_url": {"type": "string", "format": "uri"},
                "required": {"type": "number", "description": "Credits the request needs (406)."},
                "available": {"type": "number", "description": "Credits the key has (406)."},
                "retry_after": {"type": "number", "description": "Seconds to wait (429)."},
                "status": {
                    "type": "string",
                    "enum": JOB_STATUSES,
                    "description": "The request's state (409).",
                },
            },
        },
    }


def _service_schemas() -> dict[str, Any]:
    return {
        "Health": {
            "type": "object",
            "required": ["status", "uptime_seconds", "test_weights"],
            "properties": {
                "status": {"type": "string", "enum": ["ok"]},
                "uptime_seconds": {"type": "number"},
                "test_weights": {
                    "type": "boolean",
                    "description": "The images are noise from random weights.",
                },
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["ready", "reason", "warmup_seconds"],
            "properties": {
                "ready": {"type": "boolean"},
                "reason": {"type": "string"},
                "warmup_seconds": {"type": "object", "additionalProperties": {"type": "number"}},
            },
        },
        "EndpointList": {
            "type": "object",
            "required": ["endpoints"],
            "properties": {
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "api", "apis", "title", "description", "available", "schema"],
                        "properties": {
                            "id": {"type": "string"},
                            "api": {
                                "type": "string",
                                "enum": ["segmind", "fal"],
                                "description": "The style its documentation leads with (the first of apis).",
                            },
                            "apis": {
                                "type": "array",
                                "items": {"type": "string", "enum": ["segmind", "fal"]},
                                "description": "Every style that serves it.",
                            },
                            "title": {"type": "string"},
                            "description": {"type": "string"},
                            "published": {
                                "type": "boolean",
                                "description": "Published through the admin routes (not shipped in graphs/).",
                            },
                            "available": {"type": "boolean"},
                            "unavailable_reason": {"type": ["string", "null"]},
                            "schema": {"type": "object", "description": "The request body's JSON Schema."},
                        },
                    },
                }
            },
        },
    }


def _segmind_schemas() -> dict[str, Any]:
    status = {"type": "string", "enum": SEGMIND_STATUSES}
    url = {"type": "string", "format": "uri"}
    size = {"type": "integer", "minimum": 1}
    metrics = {
        "type": "object",
        "description": "Seconds the request waited in the queue and ran.",
        "properties": {"queue_time": {"type": "number"}, "inference_time": {"type": "number"}},
    }
    return {
        "SegmindImages": {
            "type": "object",
            "required": ["images", "seed"],
            "description": "Several images, each base64-encoded.",
            "properties": {
                "images": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["content_type", "width", "height", "data"],
                        "properties": {
                            "content_type": {"type": "string"},
                            "width": size,
                            "height": size,
                            "data": {"type": "string", "contentEncoding": "base64"},
                        },
                    },
                },
                "seed": {"type": ["integer", "null"]},
            },
        },
        "SegmindSubmitted": {
            "type": "object",
            "required": ["request_id", "status", "status_url", "response_url", "queue_position", "cost"],
            "properties": {
                "request_id": {"type": "string"},
                "status": status,
                "status_url": url,
                "response_url": url,
                "queue_position": {"type": ["integer", "null"], "description": "Requests ahead of it."},
                "cost": {"type": "number"},
            },
        },
        "SegmindStatus": {
            "type": "object",
            "required": ["request_id", "status"],
            "properties": {
                "request_id": {"type": "string"},
                "status": status,
                "queue_position": {"type": ["integer", "null"], "description": "When QUEUED."},
                "eta_seconds": {
                    "type": ["number", "null"],
                    "description": "When QUEUED: expected seconds until the result, from this endpoint's "
                    "measured run times and the workers alive (null until one has run).",
                },
                "progress": {
                    "type": "object",
                    "description": "Sampling steps done, when PROCESSING.",
                    "properties": {"value": {"type": "number"}, "max": {"type": "number"}},
                },
                "error": {"type": ["string", "null"], "description": "When FAILED."},
            },
        },
        "SegmindResult": {
            "type": "object",
            "required": ["request_id", "status", "metrics", "cost"],
            "properties": {
                "request_id": {"type": "string"},
                "status": status,
                "metrics": metrics,
                "cost": {"type": "number"},
                "output": {
                    "description": "URL of the image, or of each image when there are several.",
                    "oneOf": [url, {"type": "array", "items": url}],
                },
                "images": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["url", "content_type", "width", "height", "size"],
                        "properties": {
                            "url": url,
                            "content_type": {"type": "string"},
                            "width": size,
                            "height": size,
                            "size": {"type": "integer", "description": "Bytes."},
                        },
                    },
                },
                "seed": {"type": ["integer", "null"]},
                "error": {"type": ["string", "null"], "description": "When FAILED."},
            },
        },
        "SegmindCancelled": {
            "type": "object",
            "required": ["request_id", "status", "cancel_requested"],
            "properties": {
                "request_id": {"type": "string"},
                "status": {"type": "string", "enum": JOB_STATUSES},
                "cancel_requested": {"type": "boolean", "enum": [True]},
            },
        },
    }


def _fal_schemas() -> dict[str, Any]:
    url = {"type": "string", "format": "uri"}
    optional_seconds = {"type": ["number", "null"]}
    return {
        "FalSubmitted": {
            "type": "object",
            "required": ["request_id", "status_url", "response_url", "cancel_url", "queue_position"],
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
            "required": ["status", "request_id", "status_url", "response_url", "cancel_url"],
            "properties": {
                "status": {"type": "string", "enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]},
                "request_id": {"type": "string"},
                "status_url": url,
                "response_url": url,
                "cancel_url": url,
                "queue_position": {"type": "integer"},
                "eta_seconds": {
                    "type": ["number", "null"],
                    "description": "When QUEUED: expected seconds until the result, from this endpoint's "
                    "measured run times and the workers alive (null until one has run).",
                },
                "logs": {
                    "type": ["array", "null"],
                    "description": "null unless asked for with ?logs=1.",
                    "items": {
                        "type": "object",
                        "required": ["message", "timestamp", "level"],
                        "properties": {
                            "message": {"type": "string"},
                            "timestamp": {"type": "string", "format": "date-time"},
                            "level": {"type": "string"},
                        },
                    },
                },
                "metrics": {"type": "object", "properties": {"inference_time": optional_seconds}},
                "error": {
                    "type": ["string", "null"],
                    "description": "When the request failed or was cancelled.",
                },
            },
        },
        "FalValidationError": {
            "type": "object",
            "required": ["detail"],
            "properties": {
                "error": {"type": "string"},
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
                },
            },
        },
        "FalImage": {
            "type": "object",
            "required": ["url", "content_type", "file_name", "file_size", "width", "height"],
            "properties": {
                "url": url,
                "content_type": {"type": "string"},
                "file_name": {"type": "string"},
                "file_size": {"type": "integer"},
                "width": {"type": "integer"},
                "height": {"type": "integer"},
            },
        },
        "FalNoResult": {
            "type": "object",
            "required": ["detail", "request_id"],
            "properties": {
                "detail": {"type": ["string", "null"], "description": "Why there is no output."},
                "request_id": {"type": "string"},
                "status": {"type": "string", "enum": ["IN_QUEUE", "IN_PROGRESS"]},
            },
        },
        "FalCancel": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["CANCELLATION_REQUESTED", "ALREADY_COMPLETED"]}
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


def _image_content(media_types: Iterable[str]) -> dict[str, Any]:
    return {media: {"schema": {"type": "string", "contentMediaType": media}} for media in media_types}


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
    finished_headers = {
        **SUBMITTED_HEADERS,
        "x-seed": _header({"type": "string"}, "The seed used.", required=True),
        "x-inference-time": _header({"type": "string"}, "Seconds the graph ran.", required=True),
        "x-queue-time": _header({"type": "string"}, "Seconds the request waited.", required=True),
    }
    image = {
        "description": "The image's bytes; JSON with each image base64-encoded when there are several",
        "headers": finished_headers,
        "content": {
            **_image_content(content_types(endpoint)),
            "application/json": {"schema": _ref("SegmindImages")},
        },
    }
    sync_responses = _submit_responses(image)
    sync_responses["500"] = _json(_ref("Error"), "The request failed while running", REQUEST_HEADERS)
    sync_responses["504"] = _json(
        _ref("Error"),
        "Not finished in the server's sync timeout; it goes on: poll the status_url in the body",
        REQUEST_HEADERS,
    )
    parameters = [_webhook("webhook", "query"), _webhook("x-webhook-url", "header"), _idempotency_key()]
    common = {
        "description": _description(endpoint),
        "tags": [endpoint.id],
        "security": PRIVATE,
        "parameters": parameters,
        "requestBody": _request_body(input_ref),
        **_operation_notes(endpoint),
    }
    submitted = _json(
        _ref("SegmindSubmitted"), "Queued; poll status_url, then fetch response_url", SUBMITTED_HEADERS
    )
    return {
        f"/v1/{endpoint.id}": {
            "post": {
                "operationId": schema_name(endpoint.id, "v1"),
                "summary": f"{endpoint.title} (synchronous)",
                **common,
                "responses": sync_responses,
            }
        },
        f"/v2/{endpoint.id}": {
            "post": {
                "operationId": schema_name(endpoint.id, "v2"),
                "summary": f"{endpoint.title} (queued)",
                **common,
                "responses": _submit_responses(submitted),
            }
        },
    }


def _segmind_queue_paths() -> dict[str, Any]:
    def lookup(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["v2 queue"],
            "security": PRIVATE,
            "parameters": [_request_id()],
            "responses": {**responses, **_errors(LOOKUP_ERRORS)},
        }

    status = _ref("SegmindStatus")
    result = _ref("SegmindResult")
    return {
        "/v2/requests/{request_id}/status": {
            "get": lookup(
                "segmind.status",
                "Status of a queued request",
                {
                    "200": _json(status, "QUEUED, PROCESSING or COMPLETED", REQUEST_HEADERS),
                    "422": _json(
                        status, "The request FAILED (or was cancelled); `error` says why", REQUEST_HEADERS
                    ),
                },
            )
        },
        "/v2/requests/{request_id}": {
            "get": lookup(
                "segmind.result",
                "Result of a queued request",
                {
                    "200": _json(result, "COMPLETED: the image URLs", REQUEST_HEADERS),
                    "202": _json(result, "Still QUEUED or PROCESSING: no output yet", REQUEST_HEADERS),
                    "422": _json(
                        result, "The request FAILED (or was cancelled); `error` says why", REQUEST_HEADERS
                    ),
                },
            )
        },
        "/v2/requests/{request_id}/events": {
            "get": lookup(
                "segmind.events",
                "Server-sent events of a request until it finishes",
                {
                    "200": _event_stream(
                        "`status` events (as the status URL shows it), `progress`, `log` and `preview` events"
                    )
                },
            )
        },
        "/v2/requests/{request_id}/cancel": {
            "post": lookup(
                "segmind.cancel",
                "Cancel a request",
                {
                    "200": _json(
                        _ref("SegmindCancelled"), "Cancelled, or cancelling once the current step ends"
                    ),
                    "409": _json(_ref("Error"), "The request had already finished; `status` says how"),
                },
            )
        },
    }


def _files_path(media_types: Iterable[str]) -> dict[str, Any]:
    index = {
        "name": "index",
        "in": "path",
        "required": True,
        "description": "Which image of the request, from 0.",
        "schema": {"type": "integer", "minimum": 0},
    }
    return {
        "/files/{request_id}/{index}": {
            "get": {
                "operationId": "files.get",
                "summary": "An output image, by the URL a result gave",
                "description": "No key needed: the request id in the URL is the credential.",
                "tags": ["files"],
                "security": PUBLIC,
                "parameters": [_request_id(), index],
                "responses": {
                    "200": {
                        "description": "The image",
                        "headers": {"Cache-Control": _header({"type": "string"}, "Private, an hour.")},
                        "content": _image_content(media_types),
                    },
                    "404": _json(_ref("Error"), "No such file: unknown request or index, or expired"),
                },
            }
        }
    }


def _fal_output_schema(endpoint: Endpoint) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "images": {"type": "array", "items": _ref("FalImage")},
        "seed": {"type": ["integer", "null"]},
        "prompt": {"type": "string"},
        "has_nsfw_concepts": {"type": "array", "items": {"type": "boolean"}},
        "timings": {"type": "object", "properties": {"inference": {"type": ["number", "null"]}}},
    }
    for name in endpoint.echo:
        properties[name] = field_schema(endpoint.fields[name])
    return {"type": "object", "required": ["images", *endpoint.echo], "properties": properties}


def _fal_paths(endpoint: Endpoint, input_ref: dict[str, str], output_ref: dict[str, str]) -> dict[str, Any]:
    base = f"/{endpoint.id}/requests/{{request_id}}"
    logs = {
        "name": "logs",
        "in": "query",
        "required": False,
        "description": "1 to include the request's log lines.",
        "schema": {"type": "integer", "enum": [0, 1]},
    }

    def operation(suffix: str, summary: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {
            "operationId": schema_name(endpoint.id, suffix),
            "summary": f"{endpoint.title}: {summary}",
            "tags": [endpoint.id],
            "security": PRIVATE,
            **extra,
            "responses": responses,
        }

    def lookup(suffix: str, summary: str, responses: dict[str, Any], *parameters: Any) -> dict[str, Any]:
        return operation(
            suffix, summary, {**responses, **_errors(LOOKUP_ERRORS)}, parameters=[_request_id(), *parameters]
        )

    status = _ref("FalStatus")
    no_result = _ref("FalNoResult")
    cancel = _ref("FalCancel")
    submit_responses = _submit_responses(
        _json(_ref("FalSubmitted"), "Queued", SUBMITTED_HEADERS),
        validation=_json(_ref("FalValidationError"), "Input that does not fit: each field and its bound"),
    )
    run_responses = {
        **submit_responses,
        "200": _json(output_ref, "The output, once the request has finished", REQUEST_HEADERS),
        "400": _json(
            {"anyOf": [_ref("Error"), no_result]},
            "The body or a parameter is invalid (`error` says which), or the request was cancelled",
        ),
        "500": _json(no_result, "The request failed; `detail` says why", REQUEST_HEADERS),
        "504": _json(
            _ref("Error"),
            "Not finished within the server's wait: the request continues in the queue (`status_url`)",
            REQUEST_HEADERS,
        ),
    }
    return {
        f"/run/{endpoint.id}": {
            "post": operation(
                "run",
                "run a request and wait for its result (fal's run host)",
                run_responses,
                description=_description(endpoint),
                parameters=[_idempotency_key()],
                requestBody=_request_body(input_ref),
                **_operation_notes(endpoint),
            )
        },
        f"/{endpoint.id}": {
            "post": operation(
                "submit",
                "queue a request",
                submit_responses,
                description=_description(endpoint),
                parameters=[_webhook("fal_webhook", "query"), _idempotency_key()],
                requestBody=_request_body(input_ref),
                **_operation_notes(endpoint),
            )
        },
        f"{base}/status": {
            "get": lookup(
                "status",
                "request status",
                {
                    "200": _json(
                        status, "COMPLETED (with `error` if it failed or was cancelled)", REQUEST_HEADERS
                    ),
                    "202": _json(status, "IN_QUEUE or IN_PROGRESS", REQUEST_HEADERS),
                },
                logs,
            )
        },
        f"{base}/status/stream": {
            "get": lookup(
                "status-stream",
                "request status as server-sent events",
                {
                    "200": _event_stream(
                        "Status bodies only (as the status URL shows them), the last one COMPLETED; with "
                        "logs=1 each carries the log lines new since the one before"
                    )
                },
                logs,
            )
        },
        base: {
            "get": lookup(
                "result",
                "request result",
                {
                    "200": _json(output_ref, "The output", REQUEST_HEADERS),
                    "400": _json(no_result, "Still in the queue or running, or cancelled", REQUEST_HEADERS),
                    "500": _json(no_result, "The request failed; `detail` says why", REQUEST_HEADERS),
                },
            )
        },
        f"{base}/cancel": {
            "put": lookup(
                "cancel",
                "cancel a request",
                {
                    "202": _json(cancel, "Cancellation requested"),
                    "400": _json(cancel, "Already completed"),
                },
            )
        },
    }


def _service_paths() -> dict[str, Any]:
    def public(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
        return {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "tags": ["service"],
                "security": PUBLIC,
                "responses": responses,
            }
        }

    return {
        "/health": public("service.health", "Liveness", {"200": _json(_ref("Health"), "The process is up")}),
        "/ready": public(
            "service.ready",
            "Readiness: warm-up is over",
            {
                "200": _json(_ref("Readiness"), "Ready for requests"),
                "503": _json(_ref("Readiness"), "Still starting; `reason` says what it is doing"),
            },
        ),
        "/metrics": public(
            "service.metrics",
            "Prometheus metrics",
            {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        ),
        "/v1/endpoints": public(
            "service.endpoints",
            "The endpoints served, with their request schemas",
            {"200": _json(_ref("EndpointList"), "Every endpoint, available or not")},
        ),
        "/openapi.json": public(
            "service.openapi",
            "This document",
            {"200": _json({"type": "object"}, "The OpenAPI 3.1 document")},
        ),
        "/docs": public(
            "service.docs",
            "The endpoints' documentation page",
            {
                "200": {
                    "description": "HTML",
                    "content": {"text/html": {"schema": {"type": "string"}}},
                }
            },
        ),
    }


def build_openapi(endpoints: Mapping[str, Endpoint], server_url: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document for these endpoints as served at `server_url`."""
    paths: dict[str, Any] = _service_paths()
    schemas = {**_common_schemas(), **_service_schemas()}
    apis = {api for endpoint in endpoints.values() for api in endpoint.apis}
    if "segmind" in apis:
        schemas.update(_segmind_schemas())
    if "fal" in apis:
        schemas.update(_fal_schemas())
    for endpoint in endpoints.values():
        input_name = schema_name(endpoint.id, "Input")
        request = endpoint.json_schema()
        request.pop("$schema", None)
        schemas[input_name] = request
        if "segmind" in endpoint.apis:
            paths.update(_segmind_paths(endpoint, _ref(input_name)))
        if "fal" in endpoint.apis:
            output_name = schema_name(endpoint.id, "Output")
            schemas[output_name] = _fal_output_schema(endpoint)
            paths.update(_fal_paths(endpoint, _ref(input_name), _ref(output_name)))
    if "segmind" in apis:
        paths.update(_segmind_queue_paths())
    paths.update(_files_path(dict.fromkeys(CONTENT_TYPES.values())))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Image generation API",
            "version": "1",
            "description": (
                "Segmind- and fal-style endpoints, each running a ComfyUI graph. Send the API key in "
                "`x-api-key` or as `Authorization: Key <key>`; only a server started with `--open-access` "
                "(local use) needs none."
            ),
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
