"""Comfy API v2 assets against a real server: every response is validated against the published
specification (tests/api/v2_spec.py), hashes are blake3 computed here from the bytes sent, and byte
ranges are compared with slices of those bytes."""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import blake3
import httpx
import pytest
from PIL import Image

from engine.settings import Settings
from tests.api.conftest import LiveServer
from tests.api.v2_spec import SpecChecker

ASSETS = "/api/v2/assets"
MAX_ASSET_BYTES = 200_000


def png(width: int = 8, color: tuple[int, int, int] = (200, 30, 90)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, 4), color).save(buffer, format="PNG")
    return buffer.getvalue()


def blake3_of(data: bytes) -> str:
    return "blake3:" + blake3.blake3(data).hexdigest()


def upload(
    client: httpx.Client,
    data: bytes,
    *,
    content_type: str = "image/png",
    file_path: str = "photo.png",
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    form = {"content_type": content_type, "file_path": file_path, **fields}
    files = {"file": ("upload.bin", data, content_type)}
    return client.post(ASSETS, data=form, files=files, headers=headers)


def blobs_named(settings: Settings, digest: str) -> list[Path]:
    """Files holding a blob on disk, found by the hash computed here (wherever the layout puts them)."""
    return [path for path in settings.assets_path.rglob("*") if path.is_file() and digest in path.name]


def error(spec: SpecChecker, response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The error envelope of a response with this status and code, checked against ErrorEnvelope."""
    assert response.status_code == status, (response.status_code, response.text[:400])
    return error_body(spec, response.json(), code)


def error_body(spec: SpecChecker, body: Any, code: str) -> dict[str, Any]:
    error = spec.check_schema("ErrorEnvelope", body)["error"]
    assert error["code"] == code, error
    return error


def bearer(server: LiveServer, key: str) -> httpx.Client:
    """A client sending its key as the specification's scheme says: Authorization: Bearer."""
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"}, timeout=120)


@pytest.fixture
def asset_settings(settings: Settings) -> Settings:
    return replace(settings, max_asset_bytes=MAX_ASSET_BYTES)


@pytest.fixture
def open_server(asset_settings: Settings) -> Iterator[tuple[LiveServer, SpecChecker]]:
    with LiveServer(replace(asset_settings, open_access=True)) as live:
        yield live, SpecChecker(live.url)


def test_upload_then_list_read_download_and_delete(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    data = png()
    with server.client() as client:
        created = spec.check(upload(client, data, tags=["input", "portrait"]))
        assert created.status_code == 201
        asset = created.json()
        assert asset["hash"] == blake3_of(data)
        assert asset["size_bytes"] == len(data)
        assert (asset["content_type"], asset["file_path"]) == ("image/png", "photo.png")
        assert asset["created_new"] is True and asset["tags"] == ["input", "portrait"]
        assert asset["url"] == f"{server.url}{ASSETS}/{asset['id']}/content"
        assert "job_id" not in asset  # the specification: absent for uploads

        listed = client.get(ASSETS)
        assert listed.status_code == 200
        assert [spec.check_schema("Asset", item)["id"] for item in listed.json()["assets"]] == [asset["id"]]

        fetched = spec.check(client.get(f"{ASSETS}/{asset['id']}"))
        assert fetched.status_code == 200
        assert {k: fetched.json()[k] for k in ("id", "hash", "size_bytes", "file_path", "created_at")} == {
            k: asset[k] for k in ("id", "hash", "size_bytes", "file_path", "created_at")
        }
        assert "created_new" not in fetched.json()

        whole = spec.check(client.get(asset["url"]))
        assert (whole.status_code, whole.content) == (200, data)
        assert whole.headers["content-type"] == "application/octet-stream"
        assert whole.headers["accept-ranges"] == "bytes"
        assert 'filename="photo.png"' in whole.headers["content-disposition"]

        part = spec.check(client.get(asset["url"], headers={"Range": "bytes=10-19"}))
        assert (part.status_code, part.content) == (206, data[10:20])
        assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
        tail = spec.check(client.get(asset["url"], headers={"Range": "bytes=-7"}))
        assert (tail.status_code, tail.content) == (206, data[-7:])
        rest = spec.check(client.get(asset["url"], headers={"Range": f"bytes={len(data) - 3}-"}))
        assert (rest.status_code, rest.content) == (206, data[-3:])

        digest = asset["hash"].removeprefix("blake3:")
        assert len(blobs_named(server.settings, digest)) == 1
        deleted = spec.check(client.delete(f"{ASSETS}/{asset['id']}"))
        assert (deleted.status_code, deleted.content) == (204, b"")
        assert blobs_named(server.settings, digest) == []  # no record names it any more
        for again in (client.delete(f"{ASSETS}/{asset['id']}"), client.get(f"{ASSETS}/{asset['id']}")):
            error(spec, spec.check(again), 404, "not_found")
        error(spec, spec.check(client.get(asset["url"])), 404, "not_found")
        assert client.get(ASSETS).json() == {"assets": [], "next_cursor": None}


def test_the_same_bytes_are_one_blob_under_each_record(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    data = png(color=(1, 2, 3))
    digest = blake3.blake3(data).hexdigest()
    with server.client() as client:
        first = spec.check(upload(client, data, file_path="a.png"))
        second = spec.check(upload(client, data, file_path="b.png"))
        assert (first.status_code, first.json()["created_new"]) == (201, True)
        assert (second.status_code, second.json()["created_new"]) == (200, False)
        assert first.json()["id"] != second.json()["id"]
        assert first.json()["hash"] == second.json()["hash"] == blake3_of(data)
        assert len(blobs_named(server.settings, digest)) == 1

        assert client.delete(f"{ASSETS}/{first.json()['id']}").status_code == 204
        assert len(blobs_named(server.settings, digest)) == 1  # still named by the second record
        assert client.get(second.json()["url"]).content == data
        assert client.delete(f"{ASSETS}/{second.json()['id']}").status_code == 204
        assert blobs_named(server.settings, digest) == []


def test_head_by_hash_and_minting_from_a_hash(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    data = png(color=(9, 9, 9))
    by_hash = f"{ASSETS}/by-hash/{blake3_of(data)}"
    with server.client() as client:
        assert spec.check(client.head(by_hash)).status_code == 404
        error(
            spec,
            spec.check(client.post(f"{ASSETS}/from-hash", json={"hash": blake3_of(data)})),
            404,
            "blob_not_found",
        )
        original = upload(client, data).json()
        assert spec.check(client.head(by_hash)).status_code == 200
        upper = f"{ASSETS}/by-hash/blake3:{blake3.blake3(data).hexdigest().upper()}"
        assert spec.check(client.head(upper)).status_code == 200

        body = {"hash": blake3_of(data), "file_path": "copy.png", "tags": ["x"]}
        minted = spec.check(client.post(f"{ASSETS}/from-hash", json=body))
        assert minted.status_code == 201
        asset = minted.json()
        assert asset["id"] != original["id"]
        assert (asset["hash"], asset["size_bytes"], asset["content_type"]) == (
            blake3_of(data),
            len(data),
            "image/png",
        )
        assert (asset["file_path"], asset["created_new"]) == ("copy.png", False)
        assert client.get(asset["url"]).content == data

        identical = spec.check(client.post(f"{ASSETS}/from-hash", json=body))
        assert (identical.status_code, identical.json()["id"]) == (200, asset["id"])
        renamed = spec.check(client.post(f"{ASSETS}/from-hash", json={**body, "file_path": "other.png"}))
        assert renamed.status_code == 201 and renamed.json()["id"] not in (asset["id"], original["id"])

        for asset_id in (original["id"], asset["id"], renamed.json()["id"]):
            assert client.delete(f"{ASSETS}/{asset_id}").status_code == 204
        assert spec.check(client.head(by_hash)).status_code == 404


def test_another_keys_assets_are_not_found_on_every_route(asset_settings: Settings) -> None:
    with LiveServer(asset_settings) as server:
        spec = SpecChecker(server.url)
        _, alice_key = server.service.keys.add_key("alice", credits=1, rate_per_minute=600)
        _, bob_key = server.service.keys.add_key("bob", credits=1, rate_per_minute=600)
        alice, bob = bearer(server, alice_key), bearer(server, bob_key)
        data = png(color=(5, 6, 7))
        with alice, bob:
            mine = spec.check(upload(alice, data)).json()
            theirs = f"{ASSETS}/{mine['id']}"
            for response in (bob.get(theirs), bob.get(theirs + "/content"), bob.delete(theirs)):
                error(spec, spec.check(response), 404, "not_found")
            assert spec.check(bob.head(f"{ASSETS}/by-hash/{mine['hash']}")).status_code == 404
            stolen = bob.post(f"{ASSETS}/from-hash", json={"hash": mine["hash"]})
            error(spec, spec.check(stolen), 404, "blob_not_found")
            assert bob.get(ASSETS).json()["assets"] == []

            # Bob holding the same bytes learns nothing of Alice's copy: a new blob, as far as he can tell.
            his = spec.check(upload(bob, data))
            assert (his.status_code, his.json()["created_new"]) == (201, True)
            assert spec.check(bob.delete(f"{ASSETS}/{his.json()['id']}")).status_code == 204
            assert alice.get(mine["url"]).content == data  # Bob's delete left Alice's bytes alone
            assert spec.check(alice.get(theirs)).status_code == 200

            anonymous = server.client()
            with anonymous:
                error(spec, spec.check(anonymous.get(theirs)), 401, "unauthorized")
                error(spec, spec.check(upload(anonymous, data)), 401, "unauthorized")


@pytest.mark.parametrize(
    "file_path",
    [
        "../../etc/passwd",
        "/etc/passwd",
        "a/../../b.png",
        "C:\\Windows\\x.png",
        "..",
        "x\x00.png",
        "evil\u202egnp.exe",
        "a\nb.png",
        "",
        "x" * 300 + ".png",
    ],
)
def test_an_upload_named_outside_its_place_is_refused(
    open_server: tuple[LiveServer, SpecChecker], file_path: str
) -> None:
    server, spec = open_server
    with server.client() as client:
        refused = spec.check(upload(client, png(), file_path=file_path))
        assert error(spec, refused, 422, "invalid_request")["details"]["field"] == "file_path"
        assert client.get(ASSETS).json()["assets"] == []
    assert [p for p in server.settings.assets_path.rglob("*") if p.is_file()] == []


def test_hostile_uploads_answer_4xx_naming_the_field(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    data = png()
    html = b"<html><script>alert(1)</script></html>"
    with server.client() as client:

        def refused(response: httpx.Response, field: str, status: int = 422) -> str:
            body = error(spec, spec.check(response), status, "invalid_request")
            assert body["details"]["field"] == field, body
            return body["message"]

        no_file = client.post(
            ASSETS,
            data={"content_type": "image/png", "file_path": "a.png"},
            files={"other": ("a", b"x", "text/plain")},
        )
        refused(no_file, "other")
        only_fields = client.post(
            ASSETS, files={"content_type": (None, "image/png"), "file_path": (None, "a.png")}
        )
        assert "no file part" in refused(only_fields, "file")
        missing_type = client.post(ASSETS, data={"file_path": "a.png"}, files={"file": ("a.png", data)})
        refused(missing_type, "content_type")
        missing_path = client.post(
            ASSETS, data={"content_type": "image/png"}, files={"file": ("a.png", data)}
        )
        refused(missing_path, "file_path")
        assert "image/jpeg" in refused(upload(client, data, content_type="image/jpeg"), "content_type")
        assert "image/png" in refused(upload(client, html, content_type="image/png"), "content_type")
        refused(upload(client, html, content_type="not a type"), "content_type")
        refused(upload(client, data, expected_hash="blake3:1234"), "expected_hash")
        refused(upload(client, data, expected_hash="sha256:" + "0" * 64), "expected_hash")
        refused(upload(client, data, expires_in="59"), "expires_in")
        refused(upload(client, data, expires_in="604801"), "expires_in")
        refused(upload(client, data, tags=["ok", "\x07"]), "tags")
        refused(upload(client, data, tags=[f"t{i}" for i in range(40)]), "tags")
        refused(upload(client, data, file_path="a" * 5000), "file_path")
        refused(upload(client, data, nonsense="1"), "nonsense")
        twice = client.post(
            ASSETS,
            data={"content_type": "image/png", "file_path": "a.png"},
            files=[("file", ("a", data)), ("file", ("b", data))],
        )
        refused(twice, "file")
        refused(client.post(ASSETS, json={"file": "aGVsbG8="}), "body")
        garbled = client.post(
            ASSETS, content=b"--nope\r\n\r\nxx", headers={"content-type": "multipart/form-data; boundary=xyz"}
        )
        refused(garbled, "body")
        no_boundary = client.post(ASSETS, content=b"xx", headers={"content-type": "multipart/form-data"})
        refused(no_boundary, "body")

        wrong_hash = spec.check(upload(client, data, expected_hash=blake3_of(data + b"x")))
        assert error(spec, wrong_hash, 409, "hash_mismatch")["details"]["hash"] == blake3_of(data)
        upper = "blake3:" + blake3.blake3(data).hexdigest().upper()
        matching = spec.check(upload(client, data, expected_hash=upper))
        assert matching.status_code == 201

        listed = client.get(ASSETS).json()["assets"]
        assert [item["id"] for item in listed] == [matching.json()["id"]]  # nothing refused was stored
    stored = [p for p in server.settings.assets_path.rglob("*") if p.is_file()]
    assert [p.name for p in stored] == [blake3.blake3(data).hexdigest()]  # and no partial file is left


def test_an_upload_over_the_limit_is_413_naming_it(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    big = b"\0" * (MAX_ASSET_BYTES + 1)
    with server.client() as client:
        declared = upload(client, big + b"\0" * 100_000, content_type="application/octet-stream")
        streamed = client.post(
            ASSETS,
            content=_chunked_form(big),
            headers={"content-type": "multipart/form-data; boundary=b0undary"},
        )
        for response in (declared, streamed):
            body = error(spec, response, 413, "payload_too_large")
            assert str(MAX_ASSET_BYTES) in body["message"]
            assert body["details"] == {"limit_bytes": MAX_ASSET_BYTES}
        exact = upload(client, big[:-1], content_type="application/octet-stream")
        assert spec.check(exact).status_code == 201
    stored = [p for p in server.settings.assets_path.rglob("*") if p.is_file()]
    assert [p.name for p in stored] == [blake3.blake3(big[:-1]).hexdigest()]


def test_an_upload_announcing_too_many_bytes_is_refused_before_they_are_sent(
    open_server: tuple[LiveServer, SpecChecker],
) -> None:
    server, spec = open_server
    url = urlsplit(server.url)
    head = (
        f"POST {ASSETS} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 1000000000000\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=30) as connection:
        connection.sendall(head.encode())  # and none of the body
        reader = connection.makefile("rb")
        status_line = reader.readline().decode()
        headers = {}
        while (line := reader.readline().decode().strip()) != "":
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = json.loads(reader.read(int(headers["content-length"])))
    assert status_line.split()[1] == "413", status_line
    assert error_body(spec, body, "payload_too_large")["details"] == {"limit_bytes": MAX_ASSET_BYTES}


def _chunked_form(data: bytes) -> Iterator[bytes]:
    """A multipart body sent without Content-Length (chunked), so only the streaming limit can stop it."""
    yield (
        b'--b0undary\r\nContent-Disposition: form-data; name="content_type"\r\n\r\napplication/octet-stream'
        b'\r\n--b0undary\r\nContent-Disposition: form-data; name="file_path"\r\n\r\nbig.bin\r\n'
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    )
    for start in range(0, len(data), 65536):
        yield data[start : start + 65536]
    yield b"\r\n--b0undary--\r\n"


def test_hostile_from_hash_bodies(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    data = png()
    with server.client() as client:
        digest = upload(client, data).json()["hash"]
        bodies: list[tuple[Any, str]] = [
            ({}, "hash"),
            ({"hash": "blake3:xyz"}, "hash"),
            ({"hash": digest.replace("blake3:", "sha256:")}, "hash"),
            ({"hash": digest + "00"}, "hash"),
            ({"hash": 12}, "hash"),
            ({"hash": digest, "file_path": "../x.png"}, "file_path"),
            ({"hash": digest, "file_path": 5}, "file_path"),
            ({"hash": digest, "tags": "x"}, "tags"),
            ({"hash": digest, "tags": [1]}, "tags"),
            ({"hash": digest, "expires_in": 10}, "expires_in"),
            ({"hash": digest, "expires_in": 120.5}, "expires_in"),
            ({"hash": digest, "expires_in": True}, "expires_in"),
            ({"hash": digest, "surprise": 1}, "surprise"),
            ([digest], "body"),
        ]
        for body, field in bodies:
            response = client.post(f"{ASSETS}/from-hash", json=body)
            assert error(spec, response, 422, "invalid_request")["details"]["field"] == field, body
        huge_number = b'{"hash": "%s", "expires_in": 1e400}' % digest.encode()
        for raw, field in (
            (huge_number, "expires_in"),
            (b"{", "body"),
            (b"\xff", "body"),
            (b"[" * 100_000, "body"),
        ):
            response = client.post(
                f"{ASSETS}/from-hash", content=raw, headers={"content-type": "application/json"}
            )
            assert error(spec, response, 422, "invalid_request")["details"]["field"] == field
        too_big = client.post(
            f"{ASSETS}/from-hash",
            content=b" " * (server.settings.max_body_bytes + 1),
            headers={"content-type": "application/json"},
        )
        error(spec, too_big, 413, "payload_too_large")
        for bad in ("blake3:xyz", "nothing", "blake3:" + "g" * 64, "%2e%2e"):
            assert spec.check(client.head(f"{ASSETS}/by-hash/{bad}")).status_code == 404


@pytest.mark.parametrize(
    ("header", "status", "wanted"),
    [
        ("bytes=5-2", 416, None),
        ("bytes=abc", 416, None),
        ("bytes=-0", 416, None),
        ("bytes=999999-", 416, None),
        ("bytes=99999999999999999999999999-", 416, None),
        ("bytes=0-99999999999999999999999999", 206, slice(0, None)),
        ("bytes=3-3", 206, slice(3, 4)),
        ("items=0-5", 200, slice(None)),
        ("bytes=0-1,4-5", 200, slice(None)),
        ("bytes", 200, slice(None)),
    ],
)
def test_range_headers(
    open_server: tuple[LiveServer, SpecChecker], header: str, status: int, wanted: slice | None
) -> None:
    server, spec = open_server
    data = png()
    with server.client() as client:
        url = upload(client, data).json()["url"]
        response = spec.check(client.get(url, headers={"Range": header}))
        assert response.status_code == status, (header, response.status_code)
        if wanted is None:
            assert response.headers["content-range"] == f"bytes */{len(data)}"
        else:
            assert response.content == data[wanted]
        etag = response.headers["etag"]
        if wanted is not None:
            assert etag == f'"{blake3.blake3(data).hexdigest()}"'


def test_if_range_serves_a_range_only_for_the_same_bytes(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    data = png()
    with server.client() as client:
        url = upload(client, data).json()["url"]
        etag = client.get(url).headers["etag"]
        same = spec.check(client.get(url, headers={"Range": "bytes=0-3", "If-Range": etag}))
        assert (same.status_code, same.content) == (206, data[:4])
        other = spec.check(client.get(url, headers={"Range": "bytes=0-3", "If-Range": '"elsewhere"'}))
        assert (other.status_code, other.content) == (200, data)


def test_listing_pages_and_bad_pagination(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    with server.client() as client:
        ids = [
            upload(client, png(color=(i, i, i)), tags=["even"] if i % 2 == 0 else []).json()["id"]
            for i in range(5)
        ]
        first = client.get(ASSETS, params={"limit": 2}).json()
        assert [item["id"] for item in first["assets"]] == ids[::-1][:2]  # newest first
        second = client.get(ASSETS, params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [item["id"] for item in second["assets"]] == ids[::-1][2:4]
        third = client.get(ASSETS, params={"limit": 2, "cursor": second["next_cursor"]}).json()
        assert ([item["id"] for item in third["assets"]], third["next_cursor"]) == ([ids[0]], None)
        even = client.get(ASSETS, params={"tag": "even"}).json()
        assert [item["id"] for item in even["assets"]] == [ids[4], ids[2], ids[0]]
        for item in first["assets"] + even["assets"]:
            spec.check_schema("Asset", item)

        for query, field in [
            ("limit=0", "limit"),
            ("limit=-1", "limit"),
            ("limit=abc", "limit"),
            ("limit=101", "limit"),
            ("limit=1e3", "limit"),
            ("limit=", "limit"),
            ("limit=99999999999999999999", "limit"),
            ("limit=%D9%A3", "limit"),
            ("limit=1&limit=2", "limit"),
            ("cursor=xyz", "cursor"),
            ("cursor=-1", "cursor"),
            ("tag=", "tag"),
        ]:
            response = client.get(f"{ASSETS}?{query}")
            body = error(spec, response, 400, "invalid_request")
            assert body["details"]["field"] == field and field in body["message"], (query, body)


def test_v2_failures_outside_handlers_use_the_envelope(open_server: tuple[LiveServer, SpecChecker]) -> None:
    server, spec = open_server
    with server.client() as client:
        error(spec, client.get("/api/v2/nothing-here"), 404, "not_found")
        not_allowed = client.put(ASSETS)
        assert "GET" in error(spec, not_allowed, 405, "method_not_allowed")["message"]
        error(spec, spec.check(client.get(f"{ASSETS}/not-a-uuid")), 404, "not_found")


def test_an_idempotency_key_is_single_use_unless_its_request_was_refused(
    asset_settings: Settings,
) -> None:
    with LiveServer(asset_settings) as server:
        spec = SpecChecker(server.url)
        _, alice_key = server.service.keys.add_key("alice", credits=1, rate_per_minute=600)
        _, bob_key = server.service.keys.add_key("bob", credits=1, rate_per_minute=600)
        alice, bob = bearer(server, alice_key), bearer(server, bob_key)
        key = {"Idempotency-Key": "3b0c2a47-0d7e-4c1e-9a55-0f3c1f0d9a11"}
        with alice, bob:
            first = spec.check(upload(alice, png(), headers=key))
            assert first.status_code == 201
            again = spec.check(upload(alice, png(color=(0, 0, 0)), headers=key))
            error(spec, again, 422, "idempotency_key_reuse")
            assert [a["id"] for a in alice.get(ASSETS).json()["assets"]] == [first.json()["id"]]
            assert spec.check(upload(bob, png(), headers=key)).status_code == 201  # keys are per owner

            other = {"Idempotency-Key": "retry-after-a-mistake"}
            refused = spec.check(upload(alice, png(), file_path="../x.png", headers=other))
            error(spec, refused, 422, "invalid_request")
            assert spec.check(upload(alice, png(), headers=other)).status_code == 200  # released, so retried
            error(spec, spec.check(upload(alice, png(), headers=other)), 422, "idempotency_key_reuse")

            for bad in (b"", b"x" * 256, "späť".encode()):
                response = alice.post(ASSETS, headers={"Idempotency-Key": bad}, files={"file": ("a", b"a")})
                assert error(spec, response, 400, "invalid_request")["details"]["field"] == "Idempotency-Key"


def test_a_download_is_an_attachment_under_the_names_last_segment(
    open_server: tuple[LiveServer, SpecChecker],
) -> None:
    server, spec = open_server
    data = png()
    with server.client() as client:
        asset = upload(client, data, file_path='albums\\фото "1";.png').json()
        assert asset["file_path"] == 'albums/фото "1";.png'  # either separator, stored as forward slashes
        response = spec.check(client.get(asset["url"]))
        disposition = response.headers["content-disposition"]
        assert disposition == (
            "attachment; filename=\"____ _1_;.png\"; filename*=UTF-8''" + quote('фото "1";.png', safe="")
        )
        assert response.headers["x-content-type-options"] == "nosniff"
        head = client.head(asset["url"])  # HEAD: the headers of a GET, no body
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(len(data)))
