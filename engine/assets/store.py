"""The asset store interface: the records over blobs, as the asset library (library.py) asks for them.

Every method is a coroutine, as in engine.jobs.store: the embedded store runs its statements on the
job store's SQLite thread (engine.jobs.sqlite_async), off the event loop. Every read is scoped to one
owner and sees only records not past their `expires_at` at `now`; only the blob bookkeeping (is a
digest still referenced, which digests are, what expired) looks across owners.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from engine.assets.types import Asset, NewAsset


class AssetStore(Protocol):
    async def add_asset(self, new: NewAsset) -> Asset: ...
    async def asset(self, owner: str, asset_id: str, now: float) -> Asset | None: ...
    async def latest_asset_over(self, owner: str, digest: str, now: float) -> Asset | None:
        """The owner's newest record over this blob: whether the owner may use the blob at all."""
        ...

    async def same_asset(
        self, owner: str, digest: str, file_path: str | None, tags: tuple[str, ...], now: float
    ) -> Asset | None: ...
    async def set_asset_expiry(self, asset_id: str, expires_at: float | None) -> Asset: ...
    async def list_assets(
        self, owner: str, limit: int, before_seq: int | None, tag: str | None, now: float
    ) -> list[Asset]:
        """Newest first; `before_seq` resumes a listing after the last record of the previous page."""
        ...

    async def delete_asset(self, owner: str, asset_id: str, now: float) -> tuple[Asset, bool] | None:
        """Delete the owner's record; (the record, whether any record still names its blob). Raises
        AssetInUse while a queued or running job holds it."""
        ...

    async def hold_assets(self, job_id: str, asset_ids: Iterable[str]) -> None:
        """The job references these assets: they cannot be deleted while it is queued or running."""
        ...

    async def job_assets(self, owner: str, job_id: str) -> list[Asset]:
        """The owner's records of a job's outputs, oldest first."""
        ...

    async def forget_job_assets(self, job_id: str) -> set[str]: ...
    async def expire_assets(self, now: float) -> set[str]:
        """Delete expired uploads and the outputs of jobs no longer stored; the digests left unnamed."""
        ...

    async def asset_digests(self) -> set[str]: ...
