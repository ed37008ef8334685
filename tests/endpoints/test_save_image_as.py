"""SaveImageAs writes each image once, in the format, quality and size asked for, inside the output folder,
without the graph embedded; and refuses a prefix that would leave the folder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine import folders
from engine.nodes.save_image_as import SaveImageAs


def noisy_batch(count: int, height: int, width: int, channels: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.rand((count, height, width, channels), generator=generator)


def saved(workdir: folders.FolderSettings, entry: dict[str, object]) -> Path:
    return Path(workdir.output_dir, str(entry["subfolder"]), str(entry["filename"]))


@pytest.mark.parametrize(
    ("image_format", "pillow_format", "content_type"),
    [("webp", "WEBP", "image/webp"), ("jpg", "JPEG", "image/jpeg"), ("jpeg", "JPEG", "image/jpeg"),
     ("png", "PNG", "image/png")],
)  # fmt: skip
def test_each_image_is_written_in_the_requested_format_and_size(
    workdir: folders.FolderSettings, image_format: str, pillow_format: str, content_type: str
) -> None:
    images = noisy_batch(2, 24, 40)
    entries = SaveImageAs().save(images, "api/job-3", image_format, 85)["ui"]["images"]
    assert [entry["filename"] for entry in entries] == [f"job-3_0000{i}_.{image_format}" for i in (1, 2)]
    for entry in entries:
        path = saved(workdir, entry)
        assert path.parent == workdir.output_dir / "api"
        assert entry["size"] == path.stat().st_size
        assert (entry["type"], entry["format"], entry["content_type"]) == (
            "output",
            image_format,
            content_type,
        )
        with Image.open(path) as picture:
            assert picture.format == pillow_format
            assert picture.size == (entry["width"], entry["height"]) == (40, 24)


def test_png_is_lossless_and_carries_no_graph(workdir: folders.FolderSettings) -> None:
    images = noisy_batch(1, 16, 16)
    (entry,) = SaveImageAs().save(images, "api/lossless", "png", 0)["ui"]["images"]
    with Image.open(saved(workdir, entry)) as picture:
        pixels = np.asarray(picture)
        assert not {"prompt", "workflow"} & set(picture.info)
    expected = np.clip(255.0 * images[0].numpy(), 0, 255).astype(np.uint8)
    assert np.array_equal(pixels, expected)


@pytest.mark.parametrize("image_format", ["webp", "jpg"])
def test_quality_trades_size_for_fidelity(workdir: folders.FolderSettings, image_format: str) -> None:
    image = noisy_batch(1, 64, 64)
    original = np.clip(255.0 * image[0].numpy(), 0, 255).astype(np.float32)
    results = {}
    for quality in (10, 95):
        (entry,) = SaveImageAs().save(image, f"q{quality}", image_format, quality)["ui"]["images"]
        with Image.open(saved(workdir, entry)) as picture:
            error = float(np.abs(np.asarray(picture.convert("RGB"), dtype=np.float32) - original).mean())
            assert not picture.getexif()
        results[quality] = (entry["size"], error)
    assert results[10][0] < results[95][0]
    assert results[10][1] > results[95][1]


def test_an_rgba_image_saved_as_jpeg_drops_the_alpha(workdir: folders.FolderSettings) -> None:
    (entry,) = SaveImageAs().save(noisy_batch(1, 8, 8, channels=4), "alpha", "jpg", 90)["ui"]["images"]
    with Image.open(saved(workdir, entry)) as picture:
        assert picture.mode == "RGB"


def test_saving_again_with_the_same_prefix_never_overwrites(workdir: folders.FolderSettings) -> None:
    first = SaveImageAs().save(noisy_batch(1, 8, 8), "api/same", "png", 80)["ui"]["images"]
    second = SaveImageAs().save(noisy_batch(1, 8, 8), "api/same", "png", 80)["ui"]["images"]
    assert (first[0]["filename"], second[0]["filename"]) == ("same_00001_.png", "same_00002_.png")


@pytest.mark.parametrize("prefix", ["../escape", "api/../../escape", "/tmp/escape", "C:\\escape"])
def test_a_prefix_that_would_leave_the_output_folder_is_refused(
    workdir: folders.FolderSettings, prefix: str
) -> None:
    with pytest.raises(folders.PathEscapeError):
        SaveImageAs().save(noisy_batch(1, 8, 8), prefix, "png", 80)
    assert list(Path(workdir.output_dir).parent.rglob("*escape*")) == []
    assert not Path("/tmp/escape_00001_.png").exists()


def test_encoding_happens_once_per_image(
    workdir: folders.FolderSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original_save = Image.Image.save

    def counting_save(self: Image.Image, fp: object, *args: object, **kwargs: object) -> None:
        calls.append(isinstance(fp, io.BytesIO))
        original_save(self, fp, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "save", counting_save)
    SaveImageAs().save(noisy_batch(3, 8, 8), "once", "webp", 80)
    assert calls == [True, True, True]
