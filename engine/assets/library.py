"""The asset library: receive uploads into blobs, mint owners' records over them, delete both.

A blob may be deleted only when no record names it, and a record may be minted only over a blob that is
on disk. Both decisions read the records and then touch a file, so minting and deleting take turns
under one lock: a delete of a blob's last record cannot slip between an upload's rename of that blob
and the insert of its record. The lock is per process, so one process owns the folder: two could
each write the same blob safely (engine.assets.blobs), but one's delete could remove a blob the other
has just minted a record over. The lock is held for a rename and a statement, not for an upload's
transfer.

Records expire: an upload at its `expires_at`, a job's output with its job's record. Readers stop seeing
an expired record at once; `expire` (the service's expiry loop) deletes the records and their blobs.

Which blobs a caller may mint from is scoped to the caller: a blob is "there" for an owner only while
that owner has a record over it. Bytes another owner uploaded are stored once, but nothing a caller
sees, not even `created_new` on an upload, says that someone else had them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
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
        self.clock: Callable[[], float] = time.time
        """What time it is for expiry (a test moves it forward instead of waiting)."""
        self._lock = asyncio.Lock()

    async def receive(self, chunks: AsyncIterator[bytes]) -> Received:
        """Stream the bytes into a temporary file, hashing them; UploadTooLarge past `max_bytes`."""
        return await self._receive(chunks, self.max_bytes)

    async def _receive(self, chunks: AsyncIterator[bytes], limit: int | None) -> Received:
        upload = await asyncio.to_thread(self.blobs.start_upload)
        try:
            async for chunk in chunks:
                if limit is not None and upload.size + len(chunk) > limit:
                    raise UploadTooLarge(limit)
                await asyncio.to_thread(upload.write, chunk)
            digest = await asyncio.to_thread(upload.finish)
        except BaseException:
            await asyncio.to_thread(upload.discard)
            raise
        return Received(upload, digest)

    async def discard(self, received: Received) -> None:
        await asyncio.to_thread(received.upload.discard)

    def _deadline(self, expires_in: int | None) -> float | None:
        return self.clock() + expires_in if expires_in is not None else None

    async def add_upload(
        self,
        owner: str,
        received: Received,
        *,
        content_type: str,
        file_path: str | None,
        tags: tuple[str, ...],
        expires_in: int | None = None,
    ) -> tuple[Asset, bool]:
        """A new record over the received bytes, gone `expires_in` seconds from now (None: never);
        (asset, created_new): False when the owner already had a record over the same bytes."""
        async with self._lock:
            had = await self.store.latest_asset_over(owner, received.digest, self.clock())
            written = await asyncio.to_thread(self.blobs.commit, received.upload, received.digest)
            new = NewAsset(
                owner,
                received.digest,
                received.size,
                content_type,
                file_path,
                tags,
                expires_at=self._deadline(expires_in),
            )
            try:
                asset = await self.store.add_asset(new)
            except BaseException:
                if written:
                    await asyncio.to_thread(self.blobs.remove, received.digest)
                raise
        return asset, had is None

    async def add_from_hash(
        self,
        owner: str,
        digest: str,
        *,
        file_path: str | None,
        tags: tuple[str, ...],
        expires_in: int | None = None,
    ) -> tuple[Asset, bool] | None:
        """A record over a blob the owner already has a record over; (asset, created): an identical
        record (same blob, name and tags) comes back instead of a second one, its life extended to
        the one asked for if that is longer (re-referencing never shortens it). None: no such blob
        for this owner."""
        async with self._lock:
            now = self.clock()
            source = await self.store.latest_asset_over(owner, digest, now)
            if source is None:
                return None
            deadline = self._deadline(expires_in)
            same = await self.store.same_asset(owner, digest, file_path, tags, now)
            if same is not None:
                if same.expires_at is not None and (deadline is None or deadline > same.expires_at):
                    same = await self.store.set_asset_expiry(same.id, deadline)
                return same, False
            new = NewAsset(
                owner, digest, source.size_bytes, source.content_type, file_path, tags, expires_at=deadline
            )
            return await self.store.add_asset(new), True

    async def add_job_output(
        self, owner: str, job_id: str, node_id: str, output_type: str, source: OutputSource
    ) -> Asset:
        """The owner's record of one file a job's node saved; a file already recorded for the job (by
        `file_path`) is not added again. It lives as long as the job's record (`expire`)."""
        async with self._lock:
            for known in await self.store.job_assets(owner, job_id):
                if known.file_path == source.file_path:
                    return known
            received = await self._receive(_file_chunks(source.path), None)  # a result, not an upload
            written = await asyncio.to_thread(self.blobs.commit, received.upload, received.digest)
            new = NewAsset(
                owner,
                received.digest,
                received.size,
                source.content_type,
                source.file_path,
                (),
                job_id,
                node_id=node_id,
                output_type=output_type,
            )
            try:
                return await self.store.add_asset(new)
            except BaseException:
                if written:
                    await asyncio.to_thread(self.blobs.remove, received.digest)
                raise

    async def job_outputs(self, owner: str, job_id: str) -> list[Asset]:
        """The job's outputs recorded so far, in the order they were committed."""
        return await self.store.job_assets(owner, job_id)

    async def forget_job_outputs(self, job_id: str) -> None:
        """Delete what an earlier, interrupted run of the job recorded, before it runs again."""
        async with self._lock:
            for digest in await self.store.forget_job_assets(job_id):
                await asyncio.to_thread(self.blobs.remove, digest)

    async def hold(self, job_id: str, asset_ids: Iterable[str]) -> None:
        """The job's workflow references these assets: deleting one answers AssetInUse until the job
        has finished. (A delete that comes between a submission's check of its references and this
        hold still leaves the job runnable: its inputs are copies, engine.assets.resolve.)"""
        await self.store.hold_assets(job_id, asset_ids)

    async def expire(self) -> int:
        """Delete the uploads past their `expires_at` and the outputs of jobs no longer stored, and the
        blobs no record names any more; returns how many blobs went."""
        async with self._lock:
            digests = await self.store.expire_assets(self.clock())
            for digest in digests:
                await asyncio.to_thread(self.blobs.remove, digest)
        return len(digests)

    async def can_use(self, owner: str, digest: str) -> bool:
        return await self.store.latest_asset_over(owner, digest, self.clock()) is not None

    async def get(self, owner: str, asset_id: str) -> Asset | None:
        return await self.store.asset(owner, asset_id, self.clock())

    async def list(self, owner: str, *, limit: int, before_seq: int | None, tag: str | None) -> list[Asset]:
        return await self.store.list_assets(owner, limit, before_seq, tag, self.clock())

    async def delete(self, owner: str, asset_id: str) -> bool:
        """Delete the owner's record, and its blob if no other record names it; False if there is none.
        Raises AssetInUse while a queued or running job references it."""
        async with self._lock:
            deleted = await self.store.delete_asset(owner, asset_id, self.clock())
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
