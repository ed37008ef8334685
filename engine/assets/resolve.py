"""Asset references in a workflow, made into files its loader nodes can open.

Comfy API v2 names an asset inside an API-format workflow with a typed object where a file name would
go, e.g. a LoadImage's `image` input:

    {"__type": "core/ASSET", "info": {"id": "<asset uuid>", "hash": "blake3:...", "file_path": "x.png"}}

`info.id` decides; `hash` and `file_path` are hints that never override it. Every reference must name an
asset of the caller's, or the workflow is refused as a whole (`missing_asset`, naming each node and
input). Otherwise each asset's bytes are placed in the input folder, under `assets/<blake3 digest><ext>`,
and the reference becomes that name, which loaders resolve as they resolve an uploaded file's.

The placed file is a copy, not a link to the blob: a loader folder is writable through other routes
(ComfyUI's upload overwrites files in place), and writing through a link would change the stored blob
for every owner. A placed file is reused only after its bytes hash to its name again.
"""

from __future__ import annotations

import asyncio
import mimetypes
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import blake3

from engine.assets.library import AssetLibrary
from engine.assets.types import Asset

ASSET_TYPE = "core/ASSET"
INPUT_SUBFOLDER = "assets"
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,10}")


@dataclass(frozen=True)
class MissingAsset:
    node_id: str
    input_name: str
    message: str


@dataclass(frozen=True)
class MissingAssets:
    """Why a workflow's references cannot be used: Comfy API v2's `missing_asset` (422)."""

    problems: tuple[MissingAsset, ...]

    def message(self) -> str:
        return "; ".join(f"node {p.node_id} input '{p.input_name}': {p.message}" for p in self.problems)

    def node_errors(self) -> dict[str, list[dict[str, str]]]:
        """Per node, as the specification's `details.node_errors`."""
        errors: dict[str, list[dict[str, str]]] = {}
        for problem in self.problems:
            errors.setdefault(problem.node_id, []).append(
                {"field": problem.input_name, "reason": "missing_asset", "message": problem.message}
            )
        return errors


def is_reference(value: object) -> bool:
    return isinstance(value, dict) and value.get("__type") == ASSET_TYPE


def _reference_id(value: dict[str, Any]) -> str | None:
    info = value.get("info")
    asset_id = info.get("id") if isinstance(info, dict) else None
    return asset_id if isinstance(asset_id, str) and asset_id else None


def referenced_ids(workflow: dict[str, Any]) -> set[str]:
    """The ids of the assets a workflow's inputs reference (a job holds them while it waits or runs)."""
    ids = set()
    for node in workflow.values():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for value in inputs.values() if isinstance(inputs, dict) else ():
            if is_reference(value) and (asset_id := _reference_id(value)) is not None:
                ids.add(asset_id)
    return ids


def placed_name(asset: Asset) -> str:
    """The asset's name relative to the input folder: its digest, with the extension its name or its
    type suggests (some loaders list or decode by extension)."""
    suffix = PurePosixPath(asset.file_path or "").suffix
    if not _EXTENSION.fullmatch(suffix):
        suffix = mimetypes.guess_extension(asset.content_type) or ""
    return f"{INPUT_SUBFOLDER}/{asset.digest}{suffix.lower()}"


def _holds(path: Path, asset: Asset) -> bool:
    if not path.is_file() or path.stat().st_size != asset.size_bytes:
        return False
    hasher = blake3.blake3()
    hasher.update_mmap(path)
    return hasher.hexdigest() == asset.digest


def place(blob: Path, asset: Asset, input_dir: Path) -> str:
    """Copy the blob into the input folder unless its copy is already there; returns its name."""
    name = placed_name(asset)
    target = input_dir / name
    if _holds(target, asset):
        return name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{uuid.uuid4().hex}.partial")
    try:
        shutil.copyfile(blob, partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return name


async def resolve_assets(
    workflow: dict[str, Any], owner: str, library: AssetLibrary, input_dir: Path
) -> dict[str, Any] | MissingAssets:
    """The workflow with every asset reference replaced by the name of its file in `input_dir`, or every
    reference that is malformed or not the owner's. The workflow passed in is left as it was."""
    found: dict[tuple[str, str], Asset] = {}
    problems: list[MissingAsset] = []
    for node_id, node in workflow.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        if not isinstance(inputs, dict):
            continue
        for input_name, value in inputs.items():
            if not is_reference(value):
                continue
            asset_id = _reference_id(value)
            if asset_id is None:
                problems.append(MissingAsset(node_id, input_name, "the asset reference has no info.id"))
                continue
            asset = await library.get(owner, asset_id)
            if asset is None:
                problems.append(MissingAsset(node_id, input_name, f"there is no asset {asset_id!r} of yours"))
            else:
                found[node_id, input_name] = asset
    if problems:
        return MissingAssets(tuple(problems))
    names: dict[str, str] = {}
    for asset in found.values():
        if asset.digest not in names:
            names[asset.digest] = await asyncio.to_thread(place, library.path(asset), asset, input_dir)
    resolved = dict(workflow)
    for (node_id, input_name), asset in found.items():
        node = dict(resolved[node_id])
        node["inputs"] = {**node["inputs"], input_name: names[asset.digest]}
        resolved[node_id] = node
    return resolved
