"""The two ways an endpoint can be wrong: its template (at start-up) or a request (at run time).

A bad template stops start-up with one message naming the file and the field, because a server that
silently drops an endpoint is harder to debug than one that refuses to start. A bad request gets every
problem at once, each naming the field and the bound it broke, so a client can fix them all in one go.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

ErrorCode = Literal["required", "type", "range", "multiple_of", "enum", "max_length", "max_tokens", "unicode"]


class EndpointError(ValueError):
    """A template that cannot be served; the message starts with the file and names the field or node."""


class FieldError(TypedDict):
    """One problem with one request field, in the shape the HTTP layer sends back."""

    field: str
    code: ErrorCode
    """What kind of problem, for clients that react by code rather than by message."""
    message: str
    received: NotRequired[Any]
    expected: NotRequired[str]
    """The JSON type wanted: integer, number, string, boolean."""
    minimum: NotRequired[int | float]
    maximum: NotRequired[int | float]
    multiple_of: NotRequired[int]
    allowed: NotRequired[list[Any]]
    max_length: NotRequired[int]
    received_length: NotRequired[int]
    max_tokens: NotRequired[int]
    received_tokens: NotRequired[int]
    tokenizer: NotRequired[str]
    """Whose tokens a max_tokens bound counts: clip_l, t5xxl or pile_t5xl."""


class RequestError(ValueError):
    """Request values that do not fit the endpoint's fields (HTTP 400)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(error["message"] for error in errors))
        self.errors = errors

    def body(self) -> dict[str, Any]:
        """`{"error": "<all messages>", "errors": [...]}`: a readable line and the details per field."""
        return {"error": str(self), "errors": [dict(error) for error in self.errors]}

    def fal_body(self) -> dict[str, Any]:
        """fal's answer to invalid input (HTTP 422, FastAPI's shape), which fal's clients parse:
        `{"detail": [{"loc": ["body", field], "msg", "type", "ctx"}]}`, ctx holding the bound."""
        detail = []
        for error in self.errors:
            context = {key: value for key, value in error.items() if key not in ("field", "code", "message")}
            detail.append(
                {
                    "loc": ["body", error["field"]],
                    "msg": error["message"],
                    "type": _FAL_TYPES[error["code"]],
                    "ctx": context,
                }
            )
        return {"detail": detail}


_FAL_TYPES: dict[str, str] = {
    "required": "missing",
    "type": "type_error",
    "range": "value_error",
    "multiple_of": "value_error",
    "enum": "value_error",
    "max_length": "value_error",
    "max_tokens": "value_error",
    "unicode": "value_error",
}
