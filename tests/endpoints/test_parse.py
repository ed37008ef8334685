"""Requests as clients send them: the seeds' samples as JSON and as forms, defaults, the random seed, and
an error for every bad field that names the field and the bound it broke."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest

from engine.endpoints import Endpoint, RequestError
from engine.endpoints.fields import Field, FieldProblem
from tests.endpoints.samples import AURA_SAMPLE, FLUX_PRO_SAMPLE, FLUX_SCHNELL_SAMPLE

SAMPLES = {"aura-flow": AURA_SAMPLE, "flux-pro": FLUX_PRO_SAMPLE, "flux-schnell": FLUX_SCHNELL_SAMPLE}


def as_form(values: dict[str, Any]) -> dict[str, str]:
    """What JavaScript's FormData.append makes of each value: String(value)."""

    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    return {name: text(value) for name, value in values.items()}


def errors_of(endpoint: Endpoint, values: dict[str, Any], *, strings: bool = False) -> list[dict[str, Any]]:
    with pytest.raises(RequestError) as raised:
        endpoint.parse(values, strings=strings)
    return [dict(error) for error in raised.value.errors]


def only_error(endpoint: Endpoint, values: dict[str, Any], *, strings: bool = False) -> dict[str, Any]:
    errors = errors_of(endpoint, values, strings=strings)
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("endpoint_id", sorted(SAMPLES))
def test_seed_samples_parse_the_same_as_json_and_as_form(
    endpoints: dict[str, Endpoint], endpoint_id: str
) -> None:
    endpoint, sample = endpoints[endpoint_id], SAMPLES[endpoint_id]
    from_json = endpoint.parse(sample, strings=False)
    from_form = endpoint.parse(as_form(sample), strings=True)
    assert from_json == from_form
    assert {name: from_json[name] for name in sample} == sample
    assert all(type(from_json[name]) is type(from_form[name]) for name in from_json.values)
    assert from_json.seed == sample["seed"] and from_json.ignored == ()


def test_numbers_are_typed_by_field_not_by_how_they_were_sent(endpoints: dict[str, Endpoint]) -> None:
    aura = endpoints["aura-flow"]
    params = aura.parse({"cfg": 5, "steps": 25.0}, strings=False)
    assert params["cfg"] == 5.0 and isinstance(params["cfg"], float)
    assert params["steps"] == 25 and isinstance(params["steps"], int)
    assert aura.parse({"steps": "25.0", "cfg": " 7 "}, strings=True).values["steps"] == 25


def test_defaults_are_applied_and_the_seed_is_random_when_absent(endpoints: dict[str, Endpoint]) -> None:
    pro = endpoints["flux-pro"]
    first = pro.parse({"prompt": "a fox"}, strings=False)
    second = pro.parse({"prompt": "a fox"}, strings=False)
    assert {name: first[name] for name in ("guidance", "steps", "interval", "safety_tolerance")} == {
        "guidance": 3,
        "steps": 25,
        "interval": 2,
        "safety_tolerance": 2,
    }
    assert (first["aspect_ratio"], first["output_format"], first["output_quality"]) == ("1:1", "webp", 80)
    assert first.seed == first["seed"] and isinstance(first.seed, int)
    assert 0 <= first.seed < 2**53
    assert first.seed != second.seed


def test_json_null_and_an_empty_form_value_mean_not_sent(endpoints: dict[str, Endpoint]) -> None:
    aura = endpoints["aura-flow"]
    assert aura.parse({"steps": None}, strings=False)["steps"] == 25
    from_form = aura.parse({"steps": "", "seed": "", "negative_prompt": ""}, strings=True)
    assert from_form["steps"] == 25 and isinstance(from_form.seed, int)
    assert from_form["negative_prompt"] == ""


@pytest.mark.parametrize(
    ("endpoint_id", "field", "value", "message", "bound"),
    [
        ("aura-flow", "steps", 0, "steps must be between 1 and 100", {"minimum": 1, "maximum": 100}),
        ("aura-flow", "cfg", 20.5, "cfg must be between 0 and 20", {"minimum": 0, "maximum": 20}),
        ("aura-flow", "shift", 0.001, "shift must be between 0.01 and 10", {"minimum": 0.01, "maximum": 10}),
        ("aura-flow", "width", 4096, "width must be between 512 and 2048", {"minimum": 512, "maximum": 2048}),
        ("aura-flow", "number_of_images", 11, "between 1 and 10", {"minimum": 1, "maximum": 10}),
        ("aura-flow", "output_quality", 101, "between 0 and 100", {"minimum": 0, "maximum": 100}),
        ("aura-flow", "seed", -1, "seed must be between 0 and 18446744073709551615", {"minimum": 0}),
        ("flux-pro", "guidance", 6, "guidance must be between 2 and 5", {"minimum": 2, "maximum": 5}),
        ("flux-pro", "interval", 0, "interval must be between 1 and 4", {"minimum": 1, "maximum": 4}),
        ("flux-pro", "safety_tolerance", 9, "between 1 and 5", {"minimum": 1, "maximum": 5}),
        ("flux-schnell", "steps", 9, "steps must be between 1 and 8", {"minimum": 1, "maximum": 8}),
        ("flux-schnell", "denoise", 1.5, "denoise must be between 0.0008 and 1", {"maximum": 1}),
        ("flux-schnell", "width", 1001, "width must be a multiple of 8", {"multiple_of": 8}),
        ("fal-ai/aura-flow", "num_images", 5, "num_images must be between 1 and 4", {"maximum": 4}),
    ],
)
def test_a_value_out_of_range_names_the_field_and_the_bound(
    endpoints: dict[str, Endpoint],
    endpoint_id: str,
    field: str,
    value: Any,
    message: str,
    bound: dict[str, Any],
) -> None:
    endpoint = endpoints[endpoint_id]
    required = (
        {"prompt": "a fox"} if endpoint.fields.get("prompt") and endpoint.fields["prompt"].required else {}
    )
    for values, strings in (({**required, field: value}, False), (as_form({**required, field: value}), True)):
        error = only_error(endpoint, values, strings=strings)
        assert error["field"] == field and message in error["message"]
        assert error["code"] == ("multiple_of" if "multiple_of" in bound else "range")
        assert error["received"] == value
        assert bound.items() <= error.items()


@pytest.mark.parametrize(
    ("endpoint_id", "field", "value"),
    [
        ("aura-flow", "sampler", "warp_drive"),
        ("aura-flow", "scheduler", "beta"),
        ("aura-flow", "output_format", "gif"),
        ("flux-pro", "aspect_ratio", "7:3"),
    ],
)
def test_a_value_outside_an_enumeration_lists_the_allowed_values(
    endpoints: dict[str, Endpoint], endpoint_id: str, field: str, value: str
) -> None:
    endpoint = endpoints[endpoint_id]
    error = only_error(endpoint, {"prompt": "a fox", field: value})
    assert (error["field"], error["code"], error["received"]) == (field, "enum", value)
    assert error["allowed"] == list(endpoint.fields[field].enum or ())
    assert all(str(allowed) in error["message"] for allowed in error["allowed"])


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("steps", "25", "integer"),
        ("steps", 2.5, "integer"),
        ("steps", True, "integer"),
        ("cfg", "5", "number"),
        ("cfg", [5], "number"),
        ("prompt", 42, "string"),
        ("negative_prompt", {"text": "blur"}, "string"),
    ],
)
def test_json_values_must_have_the_fields_json_type(
    endpoints: dict[str, Endpoint], field: str, value: Any, expected: str
) -> None:
    error = only_error(endpoints["aura-flow"], {field: value})
    assert (error["field"], error["code"], error["expected"]) == (field, "type", expected)
    assert error["message"].startswith(f"{field} must be")


@pytest.mark.parametrize(
    ("endpoint_id", "field", "text", "expected"),
    [
        ("aura-flow", "steps", "twenty", "integer"),
        ("aura-flow", "steps", "2.5", "integer"),
        ("aura-flow", "cfg", "1,5", "number"),
        ("aura-flow", "cfg", "nan", "number"),
        ("fal-ai/aura-flow", "expand_prompt", "maybe", "boolean"),
    ],
)
def test_form_text_that_is_not_the_fields_type_is_refused(
    endpoints: dict[str, Endpoint], endpoint_id: str, field: str, text: str, expected: str
) -> None:
    error = only_error(endpoints[endpoint_id], {"prompt": "a fox", field: text}, strings=True)
    assert error["field"] == field and error["expected"] == expected and error["received"] == text


def test_form_booleans_are_text_but_json_booleans_are_not(endpoints: dict[str, Endpoint]) -> None:
    fal = endpoints["fal-ai/aura-flow"]
    assert fal.parse({"prompt": "a", "expand_prompt": "false"}, strings=True)["expand_prompt"] is False
    assert fal.parse({"prompt": "a", "expand_prompt": "1"}, strings=True)["expand_prompt"] is True
    assert fal.parse({"prompt": "a", "expand_prompt": False}, strings=False)["expand_prompt"] is False
    assert only_error(fal, {"prompt": "a", "expand_prompt": "false"})["expected"] == "boolean"


def test_the_largest_seed_comes_through_a_form_exactly(endpoints: dict[str, Endpoint]) -> None:
    params = endpoints["aura-flow"].parse({"seed": str(2**64 - 1)}, strings=True)
    assert params.seed == 2**64 - 1


def test_a_required_prompt_must_be_sent_and_not_empty(endpoints: dict[str, Endpoint]) -> None:
    pro = endpoints["flux-pro"]
    assert only_error(pro, {}) == {"field": "prompt", "code": "required", "message": "prompt is required"}
    assert only_error(pro, {"prompt": ""}, strings=True)["field"] == "prompt"


def test_strings_have_a_length_bound(endpoints: dict[str, Endpoint]) -> None:
    pro = endpoints["flux-pro"]
    limit = pro.fields["prompt"].max_length
    assert limit is not None
    # as many characters as allowed get as far as the token count (a prompt's real bound)...
    assert only_error(pro, {"prompt": "x" * limit})["code"] == "max_tokens"
    # ...one more is refused for its length alone, before any tokenizer runs on it
    error = only_error(pro, {"prompt": "x" * (limit + 1)})
    assert (
        error["field"] == "prompt" and error["max_length"] == limit and error["received_length"] == limit + 1
    )
    assert "received" not in error


def test_every_bad_field_is_reported_at_once(endpoints: dict[str, Endpoint]) -> None:
    with pytest.raises(RequestError) as raised:
        endpoints["aura-flow"].parse({"steps": 0, "cfg": "high", "sampler": "warp"}, strings=False)
    assert [error["field"] for error in raised.value.errors] == ["cfg", "steps", "sampler"]
    body = raised.value.body()
    assert body["errors"] == [dict(error) for error in raised.value.errors]
    assert all(error["message"] in body["error"] for error in raised.value.errors)


def test_fal_apps_get_the_errors_in_the_shape_fal_clients_parse(endpoints: dict[str, Endpoint]) -> None:
    with pytest.raises(RequestError) as raised:
        endpoints["fal-ai/aura-flow"].parse({"num_images": 9, "guidance_scale": "high"}, strings=False)
    assert raised.value.fal_body() == {
        "detail": [
            {"loc": ["body", "prompt"], "msg": "prompt is required", "type": "missing", "ctx": {}},
            {
                "loc": ["body", "num_images"],
                "msg": "num_images must be between 1 and 4",
                "type": "value_error",
                "ctx": {"received": 9, "minimum": 1, "maximum": 4},
            },
            {
                "loc": ["body", "guidance_scale"],
                "msg": 'guidance_scale must be a number (got the string "high")',
                "type": "type_error",
                "ctx": {"expected": "number", "received": "high"},
            },
        ]
    }


def test_unknown_fields_are_ignored_and_listed(endpoints: dict[str, Endpoint]) -> None:
    params = endpoints["flux-schnell"].parse({"prompt": "a", "base64": False, "stepz": 4}, strings=False)
    assert params.ignored == ("base64", "stepz")
    assert "base64" not in params and params["steps"] == 4


def test_numbers_no_float_or_int_conversion_holds_are_refused_by_the_bound(
    endpoints: dict[str, Endpoint],
) -> None:
    """JSON allows any number of digits; Python's int(str) stops at 4,300 and float() overflows at 1.8e308."""
    aura = endpoints["aura-flow"]
    huge = 10**400  # an int; float(huge) raises OverflowError
    error = only_error(aura, {"cfg": huge})
    assert (error["code"], error["minimum"], error["maximum"]) == ("range", 0, 20)
    assert error["received"] == "1" + "0" * 99 + "…"
    assert only_error(aura, {"cfg": -Decimal("1e400")})["message"] == "cfg must be between 0 and 20"
    assert only_error(aura, {"steps": Decimal("9" * 5000)})["received"] == "9" * 100 + "…"
    assert only_error(aura, {"seed": "1e400"}, strings=True)["maximum"] == 2**64 - 1
    assert only_error(aura, {"cfg": "-1e400"}, strings=True)["received"] == "-1E+400"
    assert only_error(aura, {"steps": "9" * 5000}, strings=True)["code"] == "range"
    assert aura.parse({"cfg": Decimal("7.5"), "steps": Decimal("3E+1")}, strings=False).values["steps"] == 30


def test_nan_and_infinity_are_reported_as_the_text_json_would_need(endpoints: dict[str, Endpoint]) -> None:
    aura = endpoints["aura-flow"]
    error = only_error(aura, {"cfg": math.nan})
    assert (error["message"], error["received"]) == ("cfg must be a number (got NaN)", "NaN")
    assert only_error(aura, {"steps": -math.inf})["received"] == "-Infinity"
    assert only_error(aura, {"cfg": "Infinity"}, strings=True)["code"] == "type"
    json.dumps(only_error(aura, {"sampler": math.inf}), allow_nan=False)


def test_a_string_must_be_unicode_text(endpoints: dict[str, Endpoint]) -> None:
    """JSON's "\\ud800" decodes to a lone surrogate, which no UTF-8 tokenizer or database can take."""
    error = only_error(endpoints["flux-pro"], {"prompt": "a \ud800 fox"})
    assert (error["field"], error["code"]) == ("prompt", "unicode")
    assert error["message"].startswith("prompt must be Unicode text: character 2 is a lone surrogate")
    assert endpoints["flux-pro"].parse({"prompt": "a \U0001f98a fox"}, strings=False)["prompt"] == "a 🦊 fox"


def test_a_required_prompt_of_only_whitespace_is_not_sent(endpoints: dict[str, Endpoint]) -> None:
    pro = endpoints["flux-pro"]
    for strings in (False, True):
        error = only_error(pro, {"prompt": " \t\n"}, strings=strings)
        assert (error["field"], error["code"]) == ("prompt", "required")
    assert pro.json_schema()["properties"]["prompt"]["pattern"] == r"\S"


def test_the_smallest_denoise_keeps_the_schedule_within_ksamplers_steps(
    endpoints: dict[str, Endpoint],
) -> None:
    """BasicScheduler samples int(steps / denoise) steps and keeps the last ones; ComfyUI's KSampler takes
    at most 10000 steps, so steps / denoise must stay within that at the endpoint's most steps."""
    schnell = endpoints["flux-schnell"]
    steps, denoise = schnell.fields["steps"], schnell.fields["denoise"]
    assert steps.maximum is not None and denoise.minimum is not None and denoise.minimum > 0
    assert int(steps.maximum / denoise.minimum) <= 10000
    assert only_error(schnell, {"prompt": "a", "denoise": 1e-300})["minimum"] == denoise.minimum


def test_a_field_without_a_bound_is_bounded_by_what_its_type_carries() -> None:
    """The largest finite double, and for integers a seed's 2**64 - 1: a value past them could not be
    converted, stored or echoed (int(str) stops at 4,300 digits)."""
    number = Field("strength", "number", minimum=0)
    with pytest.raises(FieldProblem) as raised:
        number.parse(Decimal("1e400"), text=False)
    assert raised.value.error["maximum"] == 1.7976931348623157e308
    assert raised.value.error["minimum"] == 0
    assert number.parse(10**300, text=False) == 1e300
    integer = Field("count", "integer", maximum=10)
    with pytest.raises(FieldProblem) as raised:
        integer.parse("-" + "9" * 5000, text=True)
    assert raised.value.error["minimum"] == -(2**64 - 1)
    assert integer.parse(-(2**64 - 1), text=False) == -(2**64 - 1)
