"""ComfyUI's `/view` and image uploads, as the editor uses them: names, limits, masks, previews, channels.

Expected answers come from ComfyUI's documented behaviour (its server.py: dedup as "name (1).png", the
mask written into the original's alpha, `channel=a` as black pixels carrying the alpha) and from pixel
values chosen here, checked in closed form after decoding with Pillow.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from PIL import Image, PngImagePlugin

from engine.settings import Settings
from tests.api.conftest import LiveServer

UPLOAD_LIMIT = 256 * 1024
PIXEL_LIMIT = 2_000_000


@pytest.fixture
def files_server(settings: Settings) -> Iterator[LiveServer]:
    small = replace(settings, open_access=True, max_upload_bytes=UPLOAD_LIMIT, max_upload_pixels=PIXEL_LIMIT)
    with LiveServer(small) as live:
        yield live


def png(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def gradient(width: int = 5, height: int = 4) -> Image.Image:
    """Pixel (x, y) = (10x, 20y, 7x + 3y, 40x + 11y): every pixel different, every channel known."""
    image = Image.new("RGBA", (width, height))
    for y in range(height):
        for x in range(width):
            image.putpixel((x, y), (10 * x, 20 * y, 7 * x + 3 * y, 40 * x + 11 * y))
    return image


def upload(
    client: httpx.Client, data: bytes, name: str = "a.png", route: str = "/upload/image", **fields: str
) -> httpx.Response:
    return client.post(route, data=fields, files={"image": (name, data, "image/png")})


def decoded(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def test_an_upload_lands_in_input_and_is_served_back(files_server: LiveServer) -> None:
    data = png(gradient())
    with files_server.client() as client:
        response = upload(client, data, "cat.png")
        assert response.json() == {"name": "cat.png", "subfolder": "", "type": "input"}
        assert (files_server.settings.base_dir / "input" / "cat.png").read_bytes() == data
        served = client.get("/view", params={"filename": "cat.png", "type": "input"})
        assert served.content == data
        assert served.headers["content-type"] == "image/png"
        assert served.headers["x-content-type-options"] == "nosniff"
        nested = upload(client, data, "cat.png", subfolder="pets/cats", type="temp")
        assert nested.json() == {"name": "cat.png", "subfolder": "pets/cats", "type": "temp"}
        assert (files_server.settings.base_dir / "temp" / "pets" / "cats" / "cat.png").read_bytes() == data
        annotated = client.get("/api/view", params={"filename": "cat.png [temp]", "subfolder": "pets/cats"})
        assert annotated.content == data


def test_a_taken_name_gets_a_number_unless_overwriting_and_identical_bytes_are_reused(
    files_server: LiveServer,
) -> None:
    first, second, third = (png(Image.new("RGB", (2, 2), color)) for color in ("red", "green", "blue"))
    inputs = files_server.settings.base_dir / "input"
    with files_server.client() as client:
        assert upload(client, first, "x.png").json()["name"] == "x.png"
        assert upload(client, second, "x.png").json()["name"] == "x (1).png"
        assert upload(client, third, "x.png").json()["name"] == "x (2).png"
        assert upload(client, second, "x.png").json()["name"] == "x (1).png"  # same bytes: no new copy
        assert sorted(path.name for path in inputs.iterdir()) == ["x (1).png", "x (2).png", "x.png"]
        assert upload(client, third, "x.png", overwrite="true").json()["name"] == "x.png"
        assert (inputs / "x.png").read_bytes() == third
        assert upload(client, first, "x.png", overwrite="maybe").status_code == 400


def test_an_upload_over_the_limit_is_refused_with_the_limit(files_server: LiveServer) -> None:
    noise = Image.frombytes("RGB", (300, 300), (bytes(range(256)) * 1100)[: 300 * 300 * 3])
    data = png(noise, compress_level=0)
    assert UPLOAD_LIMIT < len(data) < UPLOAD_LIMIT + 64 * 1024  # under the Content-Length shortcut
    with files_server.client() as client:
        response = upload(client, data)
        assert response.status_code == 413
        assert response.json()["limit_bytes"] == UPLOAD_LIMIT
        assert str(UPLOAD_LIMIT) in response.json()["error"]
        huge = upload(client, data * 4)
        assert huge.status_code == 413 and huge.json()["limit_bytes"] == UPLOAD_LIMIT
        features = client.get("/features").json()
        assert features == {"supports_preview_metadata": False, "max_upload_size": UPLOAD_LIMIT}
    assert list((files_server.settings.base_dir / "input").glob("*")) == []


def test_only_images_are_taken(files_server: LiveServer) -> None:
    with files_server.client() as client:
        for data, name in (
            (b"<script>alert(1)</script>", "a.png"),
            (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 1 1\n", "a.png"),
            (png(gradient())[:60], "truncated.png"),
            (png(gradient()), "page.html"),
            (png(gradient()), "image.svg"),
        ):
            response = upload(client, data, name)
            assert response.status_code == 400, (name, response.text)
            assert response.json()["error"].startswith("image:"), response.text
            assert response.json()["field"] == "image"
        assert upload(client, png(gradient()), "ok.webp").status_code == 200  # extension, not format
        assert client.post("/upload/image", json={"image": "x"}).status_code == 415
        no_file = client.post("/upload/image", data={"type": "input"}, files={"other": ("a", b"x")})
        assert no_file.status_code == 400 and "image" in no_file.json()["error"]
        bad_type = upload(client, png(gradient()), type="models")
        assert bad_type.status_code == 400 and bad_type.json()["field"] == "type"


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height grey pixels, with one row of data: tiny on the wire."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def test_decompression_bombs_are_refused_before_decoding(files_server: LiveServer) -> None:
    bomb = png(Image.new("1", (2000, 1500)))  # 3 million pixels in a few kilobytes
    assert len(bomb) < 10_000
    with files_server.client() as client:
        response = upload(client, bomb, "bomb.png")
        assert response.status_code == 400
        assert "2000x1500 = 3000000 pixels" in response.json()["error"]
        assert str(PIXEL_LIMIT) in response.json()["error"]
        giant = upload(client, _png_declaring(100_000, 100_000), "giant.png")
        assert giant.status_code == 400 and "pixels" in giant.json()["error"], giant.text
        assert upload(client, png(Image.new("1", (1000, 1000))), "fine.png").status_code == 200


def test_mask_upload_writes_the_mask_into_the_originals_alpha(files_server: LiveServer) -> None:
    original = gradient().convert("RGB")
    info = PngImagePlugin.PngInfo()
    info.add_text("prompt", '{"1": {}}')
    output = files_server.settings.base_dir / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "photo.png").write_bytes(png(original, pnginfo=info))
    mask = Image.new("RGBA", original.size)
    for y in range(original.height):
        for x in range(original.width):
            mask.putpixel((x, y), (255, 0, 0, (x * 50 + y * 7) % 256))
    with files_server.client() as client:
        response = upload(
            client,
            png(mask),
            "clipspace-mask-1.png",
            route="/upload/mask",
            subfolder="clipspace",
            type="input",
            original_ref=json.dumps({"filename": "photo.png", "type": "output", "subfolder": ""}),
        )
        assert response.json() == {"name": "clipspace-mask-1.png", "subfolder": "clipspace", "type": "input"}
        result = decoded(
            client.get(
                "/view",
                params={"filename": "clipspace-mask-1.png", "type": "input", "subfolder": "clipspace"},
            )
        )
        assert result.mode == "RGBA" and result.size == original.size
        for y in range(original.height):
            for x in range(original.width):
                assert result.getpixel((x, y)) == (10 * x, 20 * y, 7 * x + 3 * y, (x * 50 + y * 7) % 256)
        assert result.text == {"prompt": '{"1": {}}'}
        missing = upload(client, png(mask), route="/upload/mask", original_ref='{"filename": "nope.png"}')
        assert missing.status_code == 404
        wrong_size = upload(
            client,
            png(Image.new("RGBA", (3, 3))),
            route="/upload/mask",
            original_ref='{"filename": "photo.png"}',
        )
        assert wrong_size.status_code == 400 and "3x3" in wrong_size.json()["error"]
        for ref in ("not json", "[]", '{"filename": 3}', '{"filename": "photo.png", "type": "models"}'):
            bad = upload(client, png(mask), route="/upload/mask", original_ref=ref)
            assert bad.status_code == 400, (ref, bad.text)
        assert upload(client, png(mask), route="/upload/mask").status_code == 400


def test_view_splits_channels_and_makes_previews(files_server: LiveServer) -> None:
    image = gradient()
    output = files_server.settings.base_dir / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "g.png").write_bytes(png(image))
    with files_server.client() as client:
        rgb = decoded(client.get("/view", params={"filename": "g.png", "channel": "rgb"}))
        assert rgb.mode == "RGB"
        alpha = decoded(client.get("/view", params={"filename": "g.png", "channel": "a"}))
        assert alpha.mode == "RGBA"
        for y in range(image.height):
            for x in range(image.width):
                assert rgb.getpixel((x, y)) == (10 * x, 20 * y, 7 * x + 3 * y)
                assert alpha.getpixel((x, y)) == (0, 0, 0, 40 * x + 11 * y)
        webp = client.get("/view", params={"filename": "g.png", "preview": "webp;90"})
        assert webp.headers["content-type"] == "image/webp" and decoded(webp).format == "WEBP"
        jpeg = client.get("/view", params={"filename": "g.png", "preview": "jpeg;50", "channel": "rgb"})
        assert jpeg.headers["content-type"] == "image/jpeg" and decoded(jpeg).size == image.size
        with_alpha = client.get("/view", params={"filename": "g.png", "preview": "jpeg;50", "channel": "a"})
        assert with_alpha.headers["content-type"] == "image/webp"  # jpeg has no alpha: ComfyUI sends webp
        for preview in ("webp;101", "webp;0", "webp;²", "jpeg;-5"):
            assert client.get("/view", params={"filename": "g.png", "preview": preview}).status_code == 400
        assert client.get("/view", params={"filename": "g.png", "channel": "cmyk"}).status_code == 400
        assert client.get("/view", params={"filename": "absent.png"}).status_code == 404
        assert client.get("/view", params={"filename": ""}).status_code == 400
        assert client.get("/view").status_code == 400
        (output / "notes.txt").write_text("hello")
        assert client.get("/view", params={"filename": "notes.txt", "channel": "a"}).status_code == 400


def test_view_sends_files_that_could_run_script_as_downloads(files_server: LiveServer) -> None:
    output = files_server.settings.base_dir / "output"
    output.mkdir(parents=True, exist_ok=True)
    (output / "page.html").write_text("<script>alert(1)</script>")
    (output / "icon.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"><script>1</script></svg>')
    (output / "clip.mp4").write_bytes(b"\0\0\0\x18ftypmp42")
    with files_server.client() as client:
        for name in ("page.html", "icon.svg"):
            response = client.get("/view", params={"filename": name})
            assert response.headers["content-type"] == "application/octet-stream", name
            assert response.headers["content-disposition"].startswith("attachment;"), name
        video = client.get("/view", params={"filename": "clip.mp4"})
        assert video.headers["content-type"] == "video/mp4"
        assert video.headers["content-disposition"].startswith("inline;")


def test_a_malformed_upload_body_is_a_clear_400(files_server: LiveServer) -> None:
    with files_server.client() as client:
        headers = {"content-type": "multipart/form-data; boundary=xyz"}
        garbage = client.post("/upload/image", content=b"garbage", headers=headers)
        assert garbage.status_code == 400 and "multipart" in garbage.json()["error"]
        encoded = (
            b'--xyz\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
            b"Content-Encoding: gzip\r\n\r\nxx\r\n--xyz--\r\n"
        )
        assert client.post("/upload/image", content=encoded, headers=headers).status_code == 400
        no_name = encoded.replace(b'; filename="a.png"', b"").replace(b"Content-Encoding: gzip\r\n", b"")
        assert client.post("/upload/image", content=no_name, headers=headers).status_code == 400
