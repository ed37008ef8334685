"""The /docs page: a job-flow guide, Swagger UI over /openapi.json, and every endpoint's fields, all
generated from the templates.

Everything that comes from a template (titles, descriptions, enum values, examples) is HTML-escaped:
templates are files an operator may have taken from elsewhere, and the page is served to browsers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape

from engine.endpoints.docs_guide import example_body, render_guide, shell_quote
from engine.endpoints.fields import Field, format_number, table_key
from engine.endpoints.spec import Endpoint

SWAGGER_UI_SCRIPT = "docs/assets/swagger-ui-bundle.js"
SWAGGER_UI_CSS = "docs/assets/swagger-ui.css"
REFERENCE_SCRIPT_URL = "docs/reference.js"
OPENAPI_URL = "openapi.json"
"""Relative to /docs, so they resolve on the address the browser used (and under a proxy's prefix)."""

REFERENCE_SCRIPT = """\
// Starts Swagger UI on the element that names the OpenAPI document; a file, as the page's CSP
// allows no inline script. The validator badge is off: it would send the document to a third party.
window.addEventListener("DOMContentLoaded", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    domNode: root,
    deepLinking: true,
    displayRequestDuration: true,
    validatorUrl: null,
  });
});
"""

_STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
code, pre { font: 13px ui-monospace, monospace; background: #f4f4f4; }
pre { padding: .75rem; overflow-x: auto; white-space: pre-wrap; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid #eee; }
.unavailable { color: #a00; }
.price { color: #555; }
"""


def _type(field: Field) -> str:
    if field.enum is not None:
        return f"enum ({field.type})"
    return field.type


def _bounds(field: Field) -> str:
    parts = []
    if field.minimum is not None and field.maximum is not None:
        parts.append(f"{format_number(field.minimum)} to {format_number(field.maximum)}")
    elif field.minimum is not None:
        parts.append(f"at least {format_number(field.minimum)}")
    elif field.maximum is not None:
        parts.append(f"at most {format_number(field.maximum)}")
    if field.multiple_of:
        parts.append(f"multiple of {field.multiple_of}")
    if field.enum is not None:
        parts.append("one of " + ", ".join(table_key(v) for v in field.enum))
    if field.type == "string" and field.max_length is not None and field.enum is None:
        parts.append(f"up to {field.max_length} characters")
    if field.max_tokens is not None:
        parts.append(f"up to {field.max_tokens.maximum} {field.max_tokens.tokenizer_name} tokens")
    return "; ".join(parts)


def _default(field: Field) -> str:
    if field.required:
        return "required"
    if field.random:
        return "random"
    if field.has_default:
        return json.dumps(field.default)
    return ""


def _field_row(field: Field) -> str:
    notes = []
    if field.affects_price:
        notes.append("affects price")
    if field.accepted_only:
        notes.append("accepted, changes nothing in the image")
    cells = [
        f"<code>{escape(field.name)}</code>",
        escape(_type(field)),
        escape(_default(field)),
        escape(_bounds(field)),
        escape(field.description) + (f" <em>({escape(', '.join(notes))})</em>" if notes else ""),
    ]
    return "<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>"


def curl_example(endpoint: Endpoint, server_url: str) -> str:
    """A request in the style the endpoint's documentation leads with (the first it is served in)."""
    body = shell_quote(json.dumps(example_body(endpoint)))
    if endpoint.apis[0] == "fal":
        return (
            f"curl -X POST {shell_quote(f'{server_url}/{endpoint.id}')} \\\n"
            '  -H "Authorization: Key $API_KEY" -H "Content-Type: application/json" \\\n'
            f"  -d {body}"
        )
    extension = endpoint.output_format(endpoint.defaults()).format
    return (
        f"curl -X POST {shell_quote(f'{server_url}/v1/{endpoint.id}')} \\\n"
        '  -H "x-api-key: $API_KEY" -H "Content-Type: application/json" \\\n'
        f"  -d {body} \\\n"
        f"  --output image.{extension}"
    )


def _section(endpoint: Endpoint, server_url: str) -> str:
    routes = {"segmind": f"POST /v1/{endpoint.id}, POST /v2/{endpoint.id}", "fal": f"POST /{endpoint.id}"}
    parts = [
        f'<h2 id="{escape(endpoint.id)}">{escape(endpoint.title)} <code>{escape(endpoint.id)}</code></h2>',
        *(f"<p><code>{escape(routes[api])}</code> ({escape(api)} style)</p>" for api in endpoint.apis),
    ]
    if endpoint.unavailable:
        parts.append(
            f'<p class="unavailable">Not available on this server: {escape(endpoint.unavailable)}</p>'
        )
    if endpoint.description:
        parts.append(f"<p>{escape(endpoint.description)}</p>")
    parts.append(f'<p class="price">Cost in credits: {escape(endpoint.pricing.describe())}</p>')
    parts.append(
        "<table><thead><tr><th>Field</th><th>Type</th><th>Default</th><th>Range</th><th>Description</th>"
        "</tr></thead><tbody>"
        + "".join(_field_row(field) for field in endpoint.fields.values())
        + "</tbody></table>"
    )
    parts.append(f"<pre>{escape(curl_example(endpoint, server_url))}</pre>")
    return "\n".join(parts)


def render_docs_page(endpoints: Mapping[str, Endpoint], *, server_url: str) -> str:
    """The whole page; `server_url` (the server's public or bound address) is what the examples call.

    The page links its scripts and styles relatively (docs/...), so it loads them from whichever
    address the browser used, and runs no inline script (the route's CSP allows none)."""
    toc = "".join(
        f'<li><a href="#{escape(e.id)}">{escape(e.title)}</a> <code>{escape(e.id)}</code></li>'
        for e in endpoints.values()
    )
    sections = "\n".join(_section(endpoint, server_url) for endpoint in endpoints.values())
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>API endpoints</title>"
        f'<link rel="stylesheet" href="{SWAGGER_UI_CSS}">'
        f"<style>{_STYLE}</style>"
        f'<script defer src="{SWAGGER_UI_SCRIPT}"></script>'
        f'<script defer src="{REFERENCE_SCRIPT_URL}"></script>'
        "</head><body>\n"
        "<h1>API endpoints</h1>\n"
        '<p><a href="#guide">How a request goes</a> · <a href="#reference">Interactive reference</a> · '
        '<a href="#endpoints">Endpoint fields</a> · <a href="openapi.json">OpenAPI document</a></p>\n'
        f"{render_guide(endpoints, server_url)}\n"
        '<section id="reference"><h2>Interactive reference</h2>'
        "<p>Every route, with its parameters, bodies and answers; <em>Try it out</em> sends the request "
        "to this server (<em>Authorize</em> takes the API key).</p>"
        f'<div id="swagger-ui" data-openapi-url="{OPENAPI_URL}"></div>'
        '<p><small>Rendered by Swagger UI (<a href="docs/assets/LICENSE">Apache License 2.0</a>).'
        "</small></p></section>\n"
        '<section id="endpoints"><h2>Endpoint fields</h2>'
        "<p>Segmind-style endpoints take JSON (typed values) or a form (text values) with the "
        "<code>x-api-key</code> header; fal-style apps take JSON with <code>Authorization: Key …</code>. "
        "Unknown fields are ignored.</p>\n"
        f"<ul>{toc}</ul>\n{sections}</section>\n</body></html>\n"
    )
