"""Comfy API v2's published specification (shared/reference/comfy-api-v2.openapi.yaml), as a checker of
real responses: every body, status and header a test gets from /api/v2 is validated with openapi-core.

The project's shared/ folder sits beside the repository (as on CI); COMFY_API_V2_SPEC names the file
elsewhere. The specification's own `servers` are replaced by the test server's URL (openapi-core finds
operations by full URL); nothing else in it is touched.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import yaml
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_schema_validator import OAS30Validator
from werkzeug.datastructures import Headers, ImmutableMultiDict

REPO = Path(__file__).resolve().parents[2]
SPEC = Path(
    os.environ.get("COMFY_API_V2_SPEC", REPO.parent / "shared" / "reference" / "comfy-api-v2.openapi.yaml")
)


@cache
def specification() -> dict[str, Any]:
    if not SPEC.is_file():
        raise FileNotFoundError(f"{SPEC} is missing: set COMFY_API_V2_SPEC to comfy-api-v2.openapi.yaml")
    return _nullable_references(yaml.safe_load(SPEC.read_text()))


def _nullable_references(node: Any) -> Any:
    """The specification writes a nullable reference as `{allOf: [{$ref}], nullable: true}` (Job's
    `progress` and `error`), meaning "that object or null"; openapi-core does not apply `nullable` to
    an `allOf`, and would refuse the null the specification allows. Each such schema becomes the
    equivalent `oneOf` of the reference and null; nothing else changes."""
    if isinstance(node, list):
        return [_nullable_references(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _nullable_references(value) for key, value in node.items()}
    all_of = node.get("allOf")
    if node.get("nullable") is True and "type" not in node and isinstance(all_of, list) and len(all_of) == 1:
        rest = {key: value for key, value in node.items() if key not in ("allOf", "nullable")}
        return {**rest, "oneOf": [all_of[0], {"type": "object", "nullable": True, "enum": [None]}]}
    return node


class _Request:
    """An httpx request as openapi-core reads one to find the operation a response answers."""

    def __init__(self, request: httpx.Request) -> None:
        url = urlsplit(str(request.url))
        self.host_url = f"{url.scheme}://{url.netloc}"
        self.path = url.path
        self.method = request.method.lower()
        self.body = None  # only responses are validated: the operation is found by method and path
        self.content_type = request.headers.get("content-type", "")
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qs(url.query)),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict(),
        )


class _Response:
    def __init__(self, response: httpx.Response) -> None:
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "")
        self.headers = Headers(dict(response.headers))
        self.data = response.content


class SpecChecker:
    def __init__(self, server_url: str) -> None:
        self.openapi = OpenAPI.from_dict({**specification(), "servers": [{"url": server_url}]})

    def check(self, response: httpx.Response) -> httpx.Response:
        """The response, once openapi-core has found it conforms to its operation in the specification
        (a status the operation does not declare fails too)."""
        self.openapi.validate_response(_Request(response.request), _Response(response))
        return response

    def check_schema(self, name: str, value: Any) -> Any:
        """A value against one of the specification's components/schemas (for bodies of extensions and
        statuses the specification does not list, such as 413)."""
        spec = specification()
        schema = {**spec["components"]["schemas"][name], "components": spec["components"]}
        OAS30Validator(schema).validate(value)
        return value
