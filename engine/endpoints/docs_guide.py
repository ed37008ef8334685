"""The job-flow guide at the top of /docs: submit, poll, result, files, events, cancel, webhooks, headers
and status codes, with curl lines that call this server (its public URL, or the address it is bound to).

The examples use the first endpoint of each API style the server has, so every line can be pasted and
run against it. The facts are README.md's "Calling it", "Webhooks" and "Jobs" sections.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape
from typing import Any

from engine.endpoints.spec import Endpoint

EXAMPLE_PROMPT = "a lighthouse on a cliff at sunset, oil painting"

STATUS_CODES = (
    ("200", "done: the image (v1), the job, or its status"),
    ("400", "a field is wrong: the body names it and its bound (fal: 422, FastAPI's shape)"),
    ("401", "missing, unknown or revoked API key"),
    ("404", "unknown endpoint or request, another key's request, or expired after the retention period"),
    ("405", "wrong method"),
    ("406", "the key's credits do not cover the request's cost"),
    ("409", "cancel of a request that already finished"),
    ("413", "body larger than the server accepts"),
    ("422", "Segmind status or result of a FAILED request"),
    ("415", "body neither JSON nor a form"),
    ("429", "rate limited; Retry-After says when to try again"),
    ("500", "the job failed (v1; fal's result of a failed request)"),
    ("503", "endpoint unavailable (a model file is missing) or storage full; Retry-After; nothing accepted"),
    ("504", "v1 or /run waited 10 minutes; the job continues in the queue"),
)


def example_body(endpoint: Endpoint) -> dict[str, Any]:
    """A small request: the required fields, from their examples (or a stock prompt)."""
    body: dict[str, Any] = {}
    for name, field in endpoint.fields.items():
        if field.example is not None:
            body[name] = field.example
        elif field.required:
            body[name] = EXAMPLE_PROMPT if field.type == "string" else field.minimum
    return body


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _body(endpoint: Endpoint) -> str:
    return shell_quote(json.dumps(example_body(endpoint)))


def _segmind(endpoint: Endpoint, server_url: str) -> str:
    key = '-H "x-api-key: $API_KEY"'
    jobs = f"{server_url}/v2/requests/$ID"
    return "\n".join(
        [
            "# submit: answers at once with the job (the same job again for a repeated Idempotency-Key)",
            f"curl -X POST {server_url}/v2/{endpoint.id} {key} -H 'Content-Type: application/json' \\",
            f"  -H 'Idempotency-Key: order-1234' -d {_body(endpoint)}",
            '#   -> {"request_id", "status": "QUEUED", "status_url", "response_url", "queue_position",'
            ' "cost"}',
            f"curl {jobs}/status {key}   # QUEUED | PROCESSING | COMPLETED | FAILED",
            f"curl -N {jobs}/events {key}   # server-sent events: status, log, progress, preview",
            f'curl {jobs} {key}   # {{"status", "output": url or [urls], "images", "seed", "metrics"}}',
            f"curl -o image {server_url}/files/$ID/0   # no key: the request id is the credential",
            f"curl -X POST {jobs}/cancel {key}   # queued or running jobs; 409 once finished",
            "# synchronous: waits and answers the image bytes",
            f"curl -X POST {server_url}/v1/{endpoint.id} {key} -H 'Content-Type: application/json' \\",
            f"  -d {_body(endpoint)} -o image",
        ]
    )


def _fal(endpoint: Endpoint, server_url: str) -> str:
    key = '-H "Authorization: Key $API_KEY"'
    app = f"{server_url}/{endpoint.id}"
    return "\n".join(
        [
            f"curl -X POST {app} {key} -H 'Content-Type: application/json' -d {_body(endpoint)}",
            '#   -> {"request_id", "status": "IN_QUEUE", "status_url", "response_url", "cancel_url"}',
            f'curl "{app}/requests/$ID/status?logs=1" {key}   # IN_QUEUE | IN_PROGRESS | COMPLETED',
            f'curl -N "{app}/requests/$ID/status/stream?logs=1" {key}   # the same bodies, pushed',
            f'curl {app}/requests/$ID {key}   # {{"images": [{{"url", ...}}], "seed", "prompt"}}',
            f"curl -X PUT {app}/requests/$ID/cancel {key}",
            "# fal's run host: waits and answers the result itself",
            f"curl -X POST {server_url}/run/{endpoint.id} {key} -H 'Content-Type: application/json' \\",
            f"  -d {_body(endpoint)}",
        ]
    )


def _first(endpoints: Mapping[str, Endpoint], api: str) -> Endpoint | None:
    return next((e for e in endpoints.values() if api in e.apis and e.unavailable is None), None) or next(
        (e for e in endpoints.values() if api in e.apis), None
    )


def render_guide(endpoints: Mapping[str, Endpoint], server_url: str) -> str:
    """The guide's HTML; `server_url` is what its curl lines call."""
    parts = [
        '<section id="guide"><h2>How a request goes</h2>',
        f"<p>Base URL: <code>{escape(server_url)}</code>. Send the API key in <code>x-api-key</code> "
        "or <code>Authorization: Key …</code> (a server started with <code>--open-access</code> needs "
        "none). Bodies are JSON or forms; unknown fields are ignored.</p>",
    ]
    segmind = _first(endpoints, "segmind")
    if segmind is not None:
        parts.append("<h3>Segmind style: submit, poll, result, files</h3>")
        parts.append(f"<pre>{escape(_segmind(segmind, server_url))}</pre>")
    fal = _first(endpoints, "fal")
    if fal is not None:
        parts.append("<h3>fal style: the queue</h3>")
        parts.append(f"<pre>{escape(_fal(fal, server_url))}</pre>")
    parts.append(
        "<h3>Headers</h3><p>Every response to a keyed request carries <code>x-remaining-credits</code>; "
        "responses about a job carry <code>x-request-id</code> and <code>x-request-cost</code> (fal: "
        "also <code>x-fal-request-id</code>); v1 images also carry <code>x-seed</code> and "
        "<code>x-inference-time</code>. <code>Idempotency-Key: &lt;id&gt;</code> (1 to 255 characters) "
        "on a submission returns the job already made with that key, marked "
        "<code>Idempotent-Replayed: true</code>, instead of a second one. The cost is reserved at "
        "submit, charged when the job completes, released if it fails or is cancelled. Status, results "
        "and files are kept for the server's retention period (an hour by default) after the job "
        "finishes, then answer 404.</p>"
    )
    parts.append(
        "<h3>Webhooks</h3><p>Add <code>?webhook=URL</code> (Segmind) or <code>?fal_webhook=URL</code> "
        "(fal) to a submission to have the result POSTed when the job finishes. Deliveries are signed "
        "as Standard Webhooks: <code>webhook-id</code>, <code>webhook-timestamp</code> and "
        "<code>webhook-signature: v1,&lt;base64 HMAC-SHA256 of "
        "&quot;{id}.{timestamp}.{body}&quot;&gt;</code>, keyed with the server's "
        "<code>whsec_…</code> secret (<code>data/webhook_secret</code>); any Standard Webhooks library "
        "verifies them. Failed deliveries are retried (0 s, 5 s, 30 s, 2 min, 10 min); dedupe on "
        "<code>webhook-id</code>. URLs that reach a private or loopback address are refused.</p>"
    )
    rows = "".join(
        f"<tr><td><code>{code}</code></td><td>{escape(text)}</td></tr>" for code, text in STATUS_CODES
    )
    parts.append(f"<h3>Status codes</h3><table><tbody>{rows}</tbody></table></section>")
    return "\n".join(parts)
