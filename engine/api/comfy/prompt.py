"""POST /prompt: validate a ComfyUI API-format graph and queue it as a job; GET /prompt: the queue length.

The answers are ComfyUI's, byte for byte: 200 `{"prompt_id", "number", "node_errors"}` (node errors of
outputs that will not run), 400 `{"error": {type, message, details, extra_info}, "node_errors"}`.
Where ComfyUI would fail with a 500 (a body that is not JSON, a prompt that is a list, a number beyond
what it can hold) the answer is a 400 of the same shape saying what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from decimal import Decimal
from typing import Any

from aiohttp import web

from engine.api.auth import rate_limited
from engine.api.comfy import add_route
from engine.api.comfy.records import COMFY_API, COMFY_ENDPOINT, number, queue_info, queue_remaining
from engine.api.comfy.requests import is_canonical_uuid, json_object
from engine.api.context import api_key, base_url, service
from engine.api.errors import ApiError, json_response
from engine.graph.validate import validate_prompt
from engine.jobs.store import JobIdTaken

MAX_CLIENT_ID = 256
MAX_NUMBER = 2**53
"""A queue `number` beyond this is no longer an exact float: two could not be told apart."""
SENSITIVE_EXTRA_DATA = ("auth_token_comfy_org", "api_key_comfy_org")
"""Credentials ComfyUI keeps out of its queue and history; the engine has no node that uses them, and
does not store them."""


class PromptRefused(Exception):
    """The request is refused before validation; answered in ComfyUI's error shape."""

    def __init__(self, kind: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details

    def response(self) -> web.Response:
        error = {"type": self.kind, "message": self.message, "details": self.details, "extra_info": {}}
        return json_response({"error": error, "node_errors": {}}, status=400)


def _out_of_range(value: Any) -> str | None:
    """The path of a number no float can hold (1e400, NaN, 5000 digits), if the body has one."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, Decimal) or (isinstance(item, float) and not math.isfinite(item)):
            return path or "the body"
        if isinstance(item, dict):
            stack.extend((f"{path}.{key}" if path else str(key), v) for key, v in item.items())
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", v) for index, v in enumerate(item))
    return None


def _optional_number(body: dict[str, Any]) -> float | None:
    """ComfyUI's `number`: any value float() takes (so "3" too), here also finite and exact."""
    value = body.get("number")
    if value is None:
        return None
    result = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            result = float(value)
    if result is None or not math.isfinite(result) or abs(result) > MAX_NUMBER:
        raise PromptRefused(
            "invalid_request", "'number' must be a number", f"between -2**53 and 2**53, got {value!r:.60}"
        )
    return result


def _targets(body: dict[str, Any]) -> list[str] | None:
    value = body.get("partial_execution_targets")
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PromptRefused(
            "invalid_request", "'partial_execution_targets' must be a list of node ids (strings)"
        )
    return value


def _extra_data(body: dict[str, Any]) -> dict[str, Any]:
    """extra_data as ComfyUI queues it: with the client_id and the creation time (ms), no credentials."""
    extra = body.get("extra_data")
    if extra is None:
        extra = {}
    if not isinstance(extra, dict):
        raise PromptRefused("invalid_request", "'extra_data' must be a JSON object")
    extra = {key: value for key, value in extra.items() if key not in SENSITIVE_EXTRA_DATA}
    client_id = body.get("client_id")
    if client_id is not None:
        if not isinstance(client_id, str) or not 0 < len(client_id) <= MAX_CLIENT_ID:
            raise PromptRefused(
                "invalid_request", f"'client_id' must be a string of 1 to {MAX_CLIENT_ID} characters"
            )
        extra["client_id"] = client_id
    extra["create_time"] = int(time.time() * 1000)
    return extra


def _front(body: dict[str, Any]) -> bool:
    value = body.get("front")
    if value is not None and not isinstance(value, bool):
        raise PromptRefused("invalid_request", "'front' must be true or false")
    return bool(value)


async def _read(request: web.Request) -> dict[str, Any]:
    try:
        body = await json_object(request)
    except ApiError as exc:
        raise PromptRefused("invalid_request", exc.message) from exc
    where = _out_of_range(body)
    if where is not None:
        raise PromptRefused("invalid_request", "a number in the request is out of range", where)
    return body


@rate_limited
async def post_prompt(request: web.Request) -> web.Response:
    try:
        return await _queue_prompt(request)
    except PromptRefused as refused:
        return refused.response()


async def _queue_prompt(request: web.Request) -> web.Response:
    body = await _read(request)
    prompt = body.get("prompt")
    if prompt is None:
        raise PromptRefused("no_prompt", "No prompt provided", "No prompt provided")
    if not isinstance(prompt, dict):
        raise PromptRefused(
            "invalid_prompt", "The prompt must be a JSON object of node id -> node", type(prompt).__name__
        )
    prompt_id = body.get("prompt_id")
    if prompt_id is None:
        prompt_id = str(uuid.uuid4())
    elif not is_canonical_uuid(prompt_id):
        raise PromptRefused(
            "invalid_prompt_id",
            "prompt_id must be a valid UUID",
            "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
            "omit it to let the server generate one",
        )
    targets = _targets(body)
    extra_data = _extra_data(body)
    queue_number = _optional_number(body)
    front = _front(body)

    engine = service(request)
    result = await asyncio.to_thread(validate_prompt, engine.registry, prompt, targets)
    if result.validated is None:
        return json_response(result.error_body(), status=400)
    cast = result.validated.prompt
    stored = {str(node_id): cast.get(str(node_id), node) for node_id, node in prompt.items()}
    try:
        job = await engine.submit_graph(
            stored,
            job_id=prompt_id,
            api=COMFY_API,
            endpoint=COMFY_ENDPOINT,
            key=api_key(request),
            base_url=base_url(request),
            targets=result.validated.outputs,
            extra_data=extra_data,
            number=queue_number,
            front=front,
        )
    except JobIdTaken as exc:
        raise PromptRefused(
            "invalid_prompt_id", "prompt_id is already in use", "omit it to let the server generate one"
        ) from exc
    return json_response(
        {"prompt_id": job.id, "number": number(job), "node_errors": result.node_errors_json()}
    )


async def get_prompt(request: web.Request) -> web.Response:
    return json_response(queue_info(await queue_remaining(service(request))))


def add_routes(app: web.Application) -> None:
    add_route(app, "POST", "/prompt", post_prompt)
    add_route(app, "GET", "/prompt", get_prompt)
