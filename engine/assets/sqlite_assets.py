"""Asset records in the job store's SQLite file (table `assets`, schema in engine.jobs.sqlite_schema)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid

from engine.assets.types import Asset, NewAsset
from engine.jobs.sqlite_connection import SqliteConnection


def _asset(row: sqlite3.Row) -> Asset:
    return Asset(
        id=row["id"],
        seq=row["seq"],
        owner=row["owner"],
        digest=row["digest"],
        size_bytes=row["size_bytes"],
        content_type=row["content_type"],
        file_path=row["file_path"],
        tags=tuple(json.loads(row["tags"])),
        created_at=row["created_at"],
        job_id=row["job_id"],
    )


class AssetTable(SqliteConnection):
    def add_asset(self, new: NewAsset) -> Asset:
        with self._transaction() as db:
            row = db.execute(
                """INSERT INTO assets (id, owner, digest, size_bytes, content_type, file_path, tags, job_id,
                                       created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *""",
                (
                    str(uuid.uuid4()),
                    new.owner,
                    new.digest,
                    new.size_bytes,
                    new.content_type,
                    new.file_path,
                    json.dumps(list(new.tags)),
                    new.job_id,
                    time.time(),
                ),
            ).fetchone()
        return _asset(row)

    def asset(self, owner: str, asset_id: str) -> Asset | None:
        rows = self._query("SELECT * FROM assets WHERE id = ? AND owner = ?", (asset_id, owner))
        return _asset(rows[0]) if rows else None

    def latest_asset_over(self, owner: str, digest: str) -> Asset | None:
        rows = self._query(
            "SELECT * FROM assets WHERE owner = ? AND digest = ? ORDER BY seq DESC LIMIT 1", (owner, digest)
        )
        return _asset(rows[0]) if rows else None

    def same_asset(
        self, owner: str, digest: str, file_path: str | None, tags: tuple[str, ...]
    ) -> Asset | None:
        """An upload or earlier mint (not a job's output) with the same blob, name and tags."""
        rows = self._query(
            """SELECT * FROM assets WHERE owner = ? AND digest = ? AND file_path IS ? AND tags = ?
               AND job_id IS NULL ORDER BY seq DESC LIMIT 1""",
            (owner, digest, file_path, json.dumps(list(tags))),
        )
        return _asset(rows[0]) if rows else None

    def list_assets(self, owner: str, limit: int, before_seq: int | None, tag: str | None) -> list[Asset]:
        sql = "SELECT * FROM assets WHERE owner = ?"
        args: list[object] = [owner]
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        if tag is not None:
            sql += " AND EXISTS (SELECT 1 FROM json_each(assets.tags) WHERE value = ?)"
            args.append(tag)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [_asset(row) for row in self._query(sql, tuple(args))]

    def delete_asset(self, owner: str, asset_id: str) -> tuple[Asset, bool] | None:
        with self._transaction() as db:
            row = db.execute(
                "DELETE FROM assets WHERE id = ? AND owner = ? RETURNING *", (asset_id, owner)
            ).fetchone()
            if row is None:
                return None
            referenced = db.execute("SELECT 1 FROM assets WHERE digest = ? LIMIT 1", (row["digest"],))
            return _asset(row), referenced.fetchone() is not None

    def job_assets(self, owner: str, job_id: str) -> list[Asset]:
        rows = self._query(
            "SELECT * FROM assets WHERE owner = ? AND job_id = ? ORDER BY seq", (owner, job_id)
        )
        return [_asset(row) for row in rows]

    def asset_digests(self) -> set[str]:
        return {row["digest"] for row in self._query("SELECT DISTINCT digest FROM assets")}
