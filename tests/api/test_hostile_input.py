"""Bodies and URLs a careless or hostile client sends: each answers 4xx saying what is wrong, never 500,
and every JSON body the server writes is strict JSON (RFC 8259: no NaN, no Infinity)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from tests.api.conftest import LiveServer

MULTIPART = "multipart/form-data; boundary=xyz"


def strict_json(response: httpx.Response) -> Any:
    """The body as a strict parser (JavaScript's JSON.parse, Go, Rust) reads it."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON: {response.text[:200]}")

    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    return json.loads(response.text, parse_constant=refuse)


def error_of(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, (response.status_code, response.text[:300])
    return strict_json(response)["error"]


def post(client: httpx.Client, path: str, body: bytes, content_type: str) -> httpx.Response:
    return client.post(path, content=body, headers={"content-type": content_type})


def field_error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = strict_json(response)
    errors = body["errors"] if "errors" in body else body["detail"]  # fal's FastAPI-style 422
    assert len(errors) == 1, errors
    return errors[0]


def test_malformed_multipart_bodies_are_refused_saying_what_is_wrong(server: LiveServer) -> None:
    part = b'--xyz\r\nContent-Disposition: form-data; name="width"\r\n\r\n8\r\n--xyz--\r\n'
    with server.client() as client:
        assert "boundary" in error_of(post(client, "/v2/solid-color", part, "multipart/form-data"))
        assert "--B" in error_of(post(client, "/v2/solid-color", b"garbage\r\n\r\n", MULTIPART))
        unterminated = b'--xyz\r\nContent-Disposition: form-data; name="width"\r\n\r\n8'
        assert "end with --B--" in error_of(post(client, "/v2/solid-color", unterminated, MULTIPART))
        nameless = part.replace(b'; name="width"', b"")
        assert "has no name" in error_of(post(client, "/v2/solid-color", nameless, MULTIPART))
        control = part.replace(b'name="width"', b'name="wi\x01dth"')
        assert "Invalid HTTP header" in error_of(post(client, "/v2/solid-color", control, MULTIPART))
        bad_value = part.replace(b"\r\n\r\n8", b"\r\n\r\n\xff8")
        message = error_of(post(client, "/v2/solid-color", bad_value, MULTIPART))
        assert message == "field 'width' is not valid utf-8 text: invalid start byte at byte 0"
        bad_name = part.replace(b'name="width"', b'name="w\xffidth"')
        assert "name is not valid UTF-8" in error_of(post(client, "/v2/solid-color", bad_name, MULTIPART))
        charset = part.replace(b"\r\n\r\n8", b"\r\nContent-Type: text/plain; charset=nope\r\n\r\n8")
        assert "'nope' is not an encoding" in error_of(post(client, "/v2/solid-color", charset, MULTIPART))
        encoded = part.replace(b"\r\n\r\n8", b"\r\nContent-Transfer-Encoding: x-nope\r\n\r\n8")
        assert "plain text" in error_of(post(client, "/v2/solid-color", encoded, MULTIPART))
        upload = part.replace(b'name="width"', b'name="width"; filename="w.txt"')
        assert "file uploads" in error_of(post(client, "/v2/solid-color", upload, MULTIPART))
        good = post(
            client,
            "/v1/solid-color",
            part.replace(
                b"\r\n--xyz--",
                b'\r\n--xyz\r\nContent-Disposition: form-data; name="height"\r\n\r\n8\r\n--xyz--',
            ),
            MULTIPART,
        )
        assert good.status_code == 200 and good.headers["content-type"] == "image/png"


def test_url_encoded_forms_must_be_text_in_their_charset(server: LiveServer) -> None:
    form = "application/x-www-form-urlencoded"
    with server.client() as client:
        raw = error_of(post(client, "/v2/solid-color", b"width=\xff", form))
        assert raw == "the form is not valid utf-8 text: invalid start byte at byte 6"
        escaped = error_of(post(client, "/v2/solid-color", b"width=8&prompt=%ff%fe", form))
        assert escaped.startswith("the form is not valid utf-8 text")
        unknown = error_of(post(client, "/v2/solid-color", b"width=8", f"{form}; charset=nope"))
        assert "'nope' is not an encoding" in unknown


def test_json_too_deep_or_with_numbers_no_float_holds_names_the_field_and_bound(server: LiveServer) -> None:
    json_type = "application/json"
    with server.client() as client:
        deep = b'{"width": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
        assert "too deeply" in error_of(post(client, "/v2/solid-color", deep, json_type))

        digits = "9" * 5000  # over Python's 4,300-digit limit on int(str)
        error = field_error(post(client, "/v2/solid-color", f'{{"width": {digits}}}'.encode(), json_type))
        assert (error["field"], error["code"], error["maximum"]) == ("width", "range", 2048)
        assert error["received"] == "9" * 100 + "…"

        error = field_error(post(client, "/v2/aura-flow", f'{{"cfg": {"9" * 400}}}'.encode(), json_type))
        assert (error["field"], error["code"], error["message"]) == (
            "cfg",
            "range",
            "cfg must be between 0 and 20",
        )

        error = field_error(post(client, "/v2/aura-flow", b'{"cfg": -1e400}', json_type))
        assert (error["code"], error["minimum"], error["received"]) == ("range", 0, "-1E+400")

        error = field_error(
            post(client, "/fal-ai/aura-flow", b'{"prompt": "a", "seed": 1e400}', json_type), 422
        )
        assert error["ctx"]["maximum"] == 2**64 - 1 and error["ctx"]["received"] == "1E+400"


def test_nan_and_infinity_are_echoed_as_text_so_the_error_is_strict_json(server: LiveServer) -> None:
    json_type = "application/json"
    with server.client() as client:
        error = field_error(post(client, "/v2/aura-flow", b'{"cfg": NaN}', json_type))
        assert (error["message"], error["received"]) == ("cfg must be a number (got NaN)", "NaN")
        error = field_error(post(client, "/v2/aura-flow", b'{"steps": -Infinity}', json_type))
        assert error["received"] == "-Infinity"
        detail = field_error(
            post(client, "/fal-ai/aura-flow", b'{"prompt": "a", "seed": Infinity}', json_type), 422
        )
        assert detail["ctx"]["received"] == "Infinity"
        form = "application/x-www-form-urlencoded"
        error = field_error(post(client, "/v2/aura-flow", b"cfg=1e400", form))
        assert (error["code"], error["maximum"]) == ("range", 20)


def test_values_a_run_cannot_use_are_refused_at_submit(server: LiveServer) -> None:
    """Each of these was accepted and then failed (or ran for minutes) in the worker."""
    flux = {"prompt": "a fox", "steps": 8, "width": 512, "height": 512}
    with server.client() as client:
        # BasicScheduler computes a schedule of int(steps / denoise) steps: 1e-300 overflowed it, and 1e-6
        # (8 million sigmas) took two minutes; the bound keeps it within KSampler's 10000 steps.
        for denoise in (1e-300, 1e-6):
            error = field_error(client.post("/v2/flux-schnell", json={**flux, "denoise": denoise}))
            assert (error["field"], error["minimum"]) == ("denoise", 0.0008)
        assert 0.0008 * 10000 >= 8  # the endpoint's most steps, over KSampler's maximum of 10000
        # A shift under 2**-25 makes the float32 sigma table's top entry infinite: heunpp2 and the SDE
        # samplers raised, dpmpp_sde with the exponential schedule never returned.
        error = field_error(client.post("/v2/aura-flow", json={"shift": 2.2e-16, "sampler": "dpmpp_sde"}))
        assert (error["field"], error["code"], error["minimum"]) == ("shift", "range", 0.01)

        surrogate = b'{"prompt": "a \\ud800 fox"}'
        error = field_error(post(client, "/v2/flux-schnell", surrogate, "application/json"))
        assert (error["field"], error["code"]) == ("prompt", "unicode")
        assert "character 2 is a lone surrogate (\\ud800" in error["message"]

        error = field_error(client.post("/v2/flux-schnell", json={**flux, "prompt": " \t\n"}))
        assert (error["field"], error["code"]) == ("prompt", "required")


def test_output_urls_take_only_the_index_the_result_lists(server: LiveServer) -> None:
    with server.client() as client:
        job = client.post("/v2/solid-color", json={"width": 8, "height": 8, "batch": 2}).json()
        deadline = time.monotonic() + 60
        while (result := client.get(f"/v2/requests/{job['request_id']}")).status_code != 200:
            assert time.monotonic() < deadline, result.text
            time.sleep(0.05)
        urls = [image["url"] for image in strict_json(result)["images"]]
        base = f"/files/{job['request_id']}"
        assert urls == [f"{server.url}{base}/0", f"{server.url}{base}/1"]
        assert client.get(f"{base}/1").status_code == 200
        for index in (
            "-1",
            "-2",
            "0_0",
            "1_",
            "01",
            "+1",
            " 1",
            "\u0661",
            "\u0660",
            "2",
            "99999999999999999999",
        ):
            assert error_of(client.get(f"{base}/{index}"), 404).startswith("no such file"), index

        output = server.call(server.service.job(job["request_id"])).outputs[1]
        path = server.service.output_path(output)
        target = path.with_name("elsewhere.png")
        path.rename(target)
        path.symlink_to(target)
        assert error_of(client.get(f"{base}/1"), 404).startswith("no such file")
        path.unlink()
        path.symlink_to("/etc/hostname")
        assert error_of(client.get(f"{base}/1"), 404).startswith("no such file")


CURL_D = "application/x-www-form-urlencoded"
"""The content type `curl -d DATA` sends unless told otherwise (curl's manual, option --data)."""


def test_json_sent_with_curls_default_form_type_is_read_as_json(server: LiveServer) -> None:
    """`curl -d '{"width": 8}'` labels its JSON as a form: it is read as the JSON it is, never as one
    unknown field that leaves the job to run on defaults."""
    with server.client() as client:
        image = post(client, "/v1/solid-color", b'{"width": 8, "height": 16, "output_format": "png"}', CURL_D)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
        assert image.content[16:24] == (8).to_bytes(4, "big") + (16).to_bytes(4, "big")  # IHDR width, height
        refused = field_error(post(client, "/v2/solid-color", b'{"width": 3000}', CURL_D))
        assert refused["field"] == "width" and refused["maximum"] < 3000
        assert "not valid JSON" in error_of(post(client, "/v2/solid-color", b'{"width": 8', CURL_D))
        assert (
            client.post("/v2/solid-color", data={"width": "8"}).status_code == 200
        )  # a real form still is one
