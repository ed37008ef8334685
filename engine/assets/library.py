"""The asset library: receive uploads into blobs, mint owners' records over them, delete both.

A blob may be deleted only when no record names it, and a record may be minted only over a blob that is
on disk. Both decisions read the records and then touch a file, so minting and deleting take turns
under one lock: a delete of a blob's last record cannot slip between an upload's rename of that blob
and the insert of its record. (One process owns the folder; the lock is held for a rename and a
statement, not for an upload's transfer.)

Which blobs a caller may mint from is scoped to the caller: a blob is "there" for an owner only while
that owner has a record over it. Bytes another owner uploaded are stored once, but nothing a caller
sees, not even `created_new` on an upload, says that someone else had them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from engine.assets.blobs import BlobFolder, BlobUpload
from engine.assets.store import AssetStore
from engine.assets.types import Asset, NewAsset

log = logging.getLogger(__name__)


class UploadTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload is larger than this server's limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class Received:
    """Bytes received and hashed, not yet an asset: `add_upload` or `discard` comes next."""

    upload: BlobUpload
    digest: str

    @property
    def size(self) -> int:
        return self.upload.size

    @property
    def head(self) -> bytes:
        return self.upload.head


@dataclass(frozen=True)
class OutputSource:
    """A job's output file to record as an asset."""

    path: Path
    file_path: str
    """Its name relative to the output folder: which output of the job it is."""
    content_type: str


OUTPUT_CHUNK_BYTES = 1024 * 1024


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as stream:
        while chunk := await asyncio.to_thread(stream.read, OUTPUT_CHUNK_BYTES):
            yield chunk


class AssetLibrary:
    def __init__(self, store: AssetStore, blobs: BlobFolder, max_bytes: int) -> None:
        self.store = store
        self.blobs = blobs
        self.max_bytes = max_bytes
        self._lock = asyncio.Lock()

    async def receive(self, chunks: AsyncIterator[bytes]) -> Received:
        """Stream the bytes into a temporary file, hashing them; UploadTooLarge past `max_bytes`."""
        upload = await asyncio.to_thread(self.blobs.start_upload)
        try:
            async for chunk in chunks:
                if upload.size + len(chunk) > self.max_bytes:
                    raise UploadTooLarge(self.max_bytes)
                await asyncio.to_thread(upload.write, chunk)
            digest = await asyncio.to_thread(upload.finish)
        except BaseException:
            await asyncio.to_thread(upload.discard)
            raise
        return Received(upload, digest)

    async def discard(self, received: Received) -> None:
        await asyncio.to_thread(received.upload.discard)

    async def add_upload(
        self,
        owner: str,
        received: Received,
        *,
        content_type: str,
        file_path: str | None,
        tags: tuple[str, ...],
    ) -> tuple[Asset, bool]:
        """A new record over the received bytes; (asset, created_new): False when the owner already had
        a record over the same bytes."""
        async with self._lock:
            had = await self.store.latest_asset_over(owner, received.digest)
            written = await asyncio.to_thread(self.blobs.commit, received.upload, received.digest)
            new = NewAsset(owner, received.digest, received.size, content_type, file_path, tags)
            try:
                asset = await self.store.add_asset(new)
            except BaseException:
                if written:
                    await asyncio.to_thread(self.blobs.remove, received.digest)
                raise
        return asset, had is None

    async def add_from_hash(
        self, owner: str, digest: str, *, file_path: str | None, tags: tuple[str, ...]
    ) -> tuple[Asset, bool] | None:
        """A record over a blob the owner already has a record over; (asset, created): an identical
        record (same blob, name and tags) comes back instead of a second one. None: no such blob for
        this owner."""
        async with self._lock:
            source = await self.store.latest_asset_over(owner, digest)
            if source is None:
                return None
            same = await self.store.same_asset(owner, digest, file_path, tags)
            if same is not None:
                return same, False
            new = NewAsset(owner, digest, source.size_bytes, source.content_type, file_path, tags)
            return await self.store.add_asset(new), True

    async def add_job_outputs(self, owner: str, job_id: str, files: list[OutputSource]) -> list[Asset]:
        """The owner's records of a job's output files, made on first asking and found after: outputs are
        assets (Comfy API v2), stored once in the blob folder however often the job is read. Files
        already recorded for the job (by `file_path`) are not added again."""
        async with self._lock:
            known = {asset.file_path: asset for asset in await self.store.job_assets(owner, job_id)}
            for source in files:
                if source.file_path in known:
                    continue
                received = await self.receive(_file_chunks(source.path))
                written = await asyncio.to_thread(self.blobs.commit, received.upload, received.digest)
                new = NewAsset(
                    owner, received.digest, received.size, source.content_type, source.file_path, (), job_id
                )
                try:
                    known[source.file_path] = await self.store.add_asset(new)
                except BaseException:
                    if written:
                        await asyncio.to_thread(self.blobs.remove, received.digest)
                    raise
        return [known[source.file_path] for source in files]

    async def can_use(self, owner: str, digest: str) -> bool:
        return await self.store.latest_asset_over(owner, digest) is not None

    async def get(self, owner: str, asset_id: str) -> Asset | None:
        return await self.store.asset(owner, asset_id)

    async def list(self, owner: str, *, limit: int, before_seq: int | None, tag: str | None) -> list[Asset]:
        return await self.store.list_assets(owner, limit, before_seq, tag)

    async def delete(self, owner: str, asset_id: str) -> bool:
        """Delete the owner's record, and its blob if no other record names it; False if there is none."""
        async with self._lock:
            deleted = await self.store.delete_asset(owner, asset_id)
            if deleted is None:
                return False
            asset, referenced = deleted
            if not referenced:
                await asyncio.to_thread(self.blobs.remove, asset.digest)
        return True

    def path(self, asset: Asset) -> Path:
        """The file holding the asset's bytes (read-only: other records may share it)."""
        return self.blobs.path(asset.digest)

    async def sweep(self) -> None:
        """Delete what a crash left behind: temporary uploads and blobs that no record names."""
        async with self._lock:
            keep = await self.store.asset_digests()
            removed = await asyncio.to_thread(self.blobs.sweep, keep)
        if removed:
            log.info("deleted %d asset blob(s) that no record named", len(removed))
