"""Endpoints: a ComfyUI graph served as a Segmind- or fal-style API, declared in `graphs/*.json`.

`load_endpoints` reads and checks the templates at start-up; each `Endpoint` parses a request into
`Params`, prices it, and builds the prompt the executor runs. `build_openapi` and `render_docs_page`
describe the endpoints to clients from the same declarations.
"""

from engine.endpoints.docs_page import render_docs_page
from engine.endpoints.errors import EndpointError, FieldError, RequestError
from engine.endpoints.fields import Field
from engine.endpoints.load import load_endpoint, load_endpoints
from engine.endpoints.openapi import build_openapi
from engine.endpoints.spec import SAVE_NODE, Endpoint, OutputFormat, Params

__all__ = [
    "SAVE_NODE",
    "Endpoint",
    "EndpointError",
    "Field",
    "FieldError",
    "OutputFormat",
    "Params",
    "RequestError",
    "build_openapi",
    "load_endpoint",
    "load_endpoints",
    "render_docs_page",
]
