"""Asset references in workflows (engine.assets.resolve), over a real library: SQLite records and blobs
on disk. The placed files are compared with the bytes uploaded, their names with blake3 computed here,
and the real LoadImage node opens what a reference became."""

from __future__ import annotations

import asyncio
import copy
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest
from PIL import Image

from engine import folders
from engine.assets.blobs import BlobFolder
from engine.assets.library import AssetLibrary
from engine.assets.resolve import MissingAssets, resolve_assets
from engine.assets.types import Asset
from engine.jobs.sqlite_async import AsyncSqliteStore
from engine.jobs.sqlite_store import SqliteStore
from engine.nodes.image import LoadImage

ALICE, BOB = "key_alice", "key_bob"


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class Library:
    """An asset library in a temporary folder, driven from synchronous tests."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = AsyncSqliteStore(SqliteStore(root / "engine.sqlite3"))
        self.library = AssetLibrary(self.store, BlobFolder(root / "assets"), max_bytes=10**6)
        self.input_dir = root / "input"

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def add(self, owner: str, data: bytes, file_path: str = "photo.png") -> Asset:
        async def add() -> Asset:
            received = await self.library.receive(_once(data))
            asset, _ = await self.library.add_upload(
                owner, received, content_type="image/png", file_path=file_path, tags=()
            )
            return asset

        return self.run(add())

    def resolve(self, workflow: dict[str, Any], owner: str = ALICE) -> dict[str, Any] | MissingAssets:
        return self.run(resolve_assets(workflow, owner, self.library, self.input_dir))

    def close(self) -> None:
        self.run(self.store.close())
        self.loop.close()


@pytest.fixture
def library(tmp_path: Path) -> Iterator[Library]:
    made = Library(tmp_path)
    yield made
    made.close()


def reference(asset_id: object, **info: Any) -> dict[str, Any]:
    return {"__type": "core/ASSET", "info": {"id": asset_id, **info}}


def workflow(image: Any) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }


def test_a_reference_becomes_a_file_the_loader_opens(library: Library, tmp_path: Path) -> None:
    data = png(6, 5)
    asset = library.add(ALICE, data)
    other = library.add(ALICE, png(3, 3))
    given = workflow(reference(asset.id, hash="blake3:" + other.digest, file_path="other.png"))
    before = copy.deepcopy(given)

    resolved = library.resolve(given)

    assert not isinstance(resolved, MissingAssets)
    name = resolved["1"]["inputs"]["image"]
    assert name == f"assets/{blake3.blake3(data).hexdigest()}.png"  # the id decides, not the hints
    assert (library.input_dir / name).read_bytes() == data
    assert resolved["2"] == given["2"] and given == before  # the caller's workflow is left alone

    previous = folders.current()
    folders.configure(base_dir=tmp_path, input_dir=library.input_dir)
    try:
        assert LoadImage.VALIDATE_INPUTS(name) is True
        image, _ = LoadImage().load_image(name)
    finally:
        folders.use(previous)
    assert tuple(image.shape) == (1, 5, 6, 3)


def test_a_placed_file_that_was_overwritten_is_placed_again(library: Library) -> None:
    data = png(4, 4)
    asset = library.add(ALICE, data)
    first = library.resolve(workflow(reference(asset.id)))
    assert not isinstance(first, MissingAssets)
    name = first["1"]["inputs"]["image"]
    (library.input_dir / name).write_bytes(png(7, 7))  # e.g. an upload route writing over it
    again = library.resolve(workflow(reference(asset.id)))
    assert not isinstance(again, MissingAssets)
    assert (library.input_dir / again["1"]["inputs"]["image"]).read_bytes() == data


def test_every_unusable_reference_is_named_and_nothing_is_placed(library: Library) -> None:
    mine = library.add(ALICE, png(2, 2))
    theirs = library.add(BOB, png(3, 2))
    given = {
        "1": {"class_type": "LoadImage", "inputs": {"image": reference(theirs.id)}},
        "2": {
            "class_type": "LoadImage",
            "inputs": {"image": reference("00000000-0000-4000-8000-000000000000")},
        },
        "3": {"class_type": "LoadImage", "inputs": {"image": {"__type": "core/ASSET"}}},
        "4": {"class_type": "LoadImage", "inputs": {"image": reference(42)}},
        "5": {"class_type": "LoadImage", "inputs": {"image": reference(mine.id)}},
        "6": {"class_type": "LoadImageMask", "inputs": {"image": "plain.png", "channel": "alpha"}},
    }

    missing = library.resolve(given)

    assert isinstance(missing, MissingAssets)
    assert [(p.node_id, p.input_name) for p in missing.problems] == [
        ("1", "image"),
        ("2", "image"),
        ("3", "image"),
        ("4", "image"),
    ]
    errors = missing.node_errors()
    assert sorted(errors) == ["1", "2", "3", "4"]
    assert all(
        e == [{"field": "image", "reason": "missing_asset", "message": e[0]["message"]}]
        for e in errors.values()
    )
    assert theirs.id in missing.message() and "node 1 input 'image'" in missing.message()
    assert not library.input_dir.exists()  # a refused workflow places nothing

    assert not isinstance(library.resolve(workflow(reference(theirs.id)), owner=BOB), MissingAssets)


def test_a_workflow_without_references_is_unchanged(library: Library) -> None:
    plain = workflow("photo.png")
    assert library.resolve(plain) == plain
    assert not library.input_dir.exists()


def test_a_restart_sweeps_what_a_crash_left_but_keeps_named_blobs(library: Library) -> None:
    kept = library.add(ALICE, png(2, 3))
    blobs = library.library.blobs
    orphan = blobs.root / "ab" / ("ab" + "0" * 62)  # a blob whose record was deleted before the crash
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"left behind")
    partial = blobs.root / ".partial-0123"  # an upload cut off mid-way
    partial.write_bytes(b"half")

    library.run(library.library.sweep())

    assert not orphan.exists() and not partial.exists()
    assert blobs.path(kept.digest).read_bytes() == png(2, 3)
