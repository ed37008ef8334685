"""The asset store interface: the records over blobs, as the asset library (library.py) asks for them.

Every method is a coroutine, as in engine.jobs.store: the embedded store runs its statements on the
job store's SQLite thread (engine.jobs.sqlite_async), off the event loop. Every read is scoped to one
owner; only the blob bookkeeping (is a digest still referenced, which digests are) looks across owners.
"""

from __future__ import annotations

from typing import Protocol

from engine.assets.types import Asset, NewAsset


class AssetStore(Protocol):
    async def add_asset(self, new: NewAsset) -> Asset: ...
    async def asset(self, owner: str, asset_id: str) -> Asset | None: ...
    async def latest_asset_over(self, owner: str, digest: str) -> Asset | None:
        """The owner's newest record over this blob: whether the owner may use the blob at all."""
        ...

    async def same_asset(
        self, owner: str, digest: str, file_path: str | None, tags: tuple[str, ...]
    ) -> Asset | None: ...
    async def list_assets(
        self, owner: str, limit: int, before_seq: int | None, tag: str | None
    ) -> list[Asset]:
        """Newest first; `before_seq` resumes a listing after the last record of the previous page."""
        ...

    async def delete_asset(self, owner: str, asset_id: str) -> tuple[Asset, bool] | None:
        """Delete the owner's record; (the record, whether any record still names its blob)."""
        ...

    async def job_assets(self, owner: str, job_id: str) -> list[Asset]:
        """The owner's records of a job's outputs, oldest first."""
        ...

    async def asset_digests(self) -> set[str]: ...
