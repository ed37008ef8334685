"""Asset records in the job store's SQLite file (tables `assets` and `asset_holds`, schema in
engine.jobs.sqlite_schema).

Sharing the file with the jobs is what lets a job's outputs live exactly as long as its record and a
queued job's references hold their assets: both are one statement against the `jobs` table.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable

from engine.assets.types import Asset, AssetInUse, NewAsset
from engine.jobs.sqlite_connection import SqliteConnection
from engine.jobs.types import JobStatus

LIVE = "(expires_at IS NULL OR expires_at > ?)"
"""A record past its `expires_at` is gone for every reader at once, before the expiry sweep deletes it."""
UNFINISHED = (JobStatus.QUEUED, JobStatus.PROCESSING)


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
        expires_at=row["expires_at"],
        node_id=row["node_id"],
        output_type=row["output_type"],
    )


def _unreferenced(db: sqlite3.Connection, digests: Iterable[str]) -> set[str]:
    return {
        digest
        for digest in set(digests)
        if db.execute("SELECT 1 FROM assets WHERE digest = ? LIMIT 1", (digest,)).fetchone() is None
    }


class AssetTable(SqliteConnection):
    def add_asset(self, new: NewAsset) -> Asset:
        with self._transaction() as db:
            row = db.execute(
                """INSERT INTO assets (id, owner, digest, size_bytes, content_type, file_path, tags, job_id,
                                       created_at, expires_at, node_id, output_type)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *""",
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
                    new.expires_at,
                    new.node_id,
                    new.output_type,
                ),
            ).fetchone()
        return _asset(row)

    def asset(self, owner: str, asset_id: str, now: float) -> Asset | None:
        rows = self._query(
            f"SELECT * FROM assets WHERE id = ? AND owner = ? AND {LIVE}", (asset_id, owner, now)
        )
        return _asset(rows[0]) if rows else None

    def latest_asset_over(self, owner: str, digest: str, now: float) -> Asset | None:
        rows = self._query(
            f"SELECT * FROM assets WHERE owner = ? AND digest = ? AND {LIVE} ORDER BY seq DESC LIMIT 1",
            (owner, digest, now),
        )
        return _asset(rows[0]) if rows else None

    def same_asset(
        self, owner: str, digest: str, file_path: str | None, tags: tuple[str, ...], now: float
    ) -> Asset | None:
        """An upload or earlier mint (not a job's output) with the same blob, name and tags."""
        rows = self._query(
            f"""SELECT * FROM assets WHERE owner = ? AND digest = ? AND file_path IS ? AND tags = ?
               AND job_id IS NULL AND {LIVE} ORDER BY seq DESC LIMIT 1""",
            (owner, digest, file_path, json.dumps(list(tags)), now),
        )
        return _asset(rows[0]) if rows else None

    def set_asset_expiry(self, asset_id: str, expires_at: float | None) -> Asset:
        with self._transaction() as db:
            row = db.execute(
                "UPDATE assets SET expires_at = ? WHERE id = ? RETURNING *", (expires_at, asset_id)
            ).fetchone()
        return _asset(row)

    def list_assets(
        self, owner: str, limit: int, before_seq: int | None, tag: str | None, now: float
    ) -> list[Asset]:
        sql = f"SELECT * FROM assets WHERE owner = ? AND {LIVE}"
        args: list[object] = [owner, now]
        if before_seq is not None:
            sql += " AND seq < ?"
            args.append(before_seq)
        if tag is not None:
            sql += " AND EXISTS (SELECT 1 FROM json_each(assets.tags) WHERE value = ?)"
            args.append(tag)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [_asset(row) for row in self._query(sql, tuple(args))]

    def delete_asset(self, owner: str, asset_id: str, now: float) -> tuple[Asset, bool] | None:
        with self._transaction() as db:
            found = db.execute(
                f"SELECT 1 FROM assets WHERE id = ? AND owner = ? AND {LIVE}", (asset_id, owner, now)
            ).fetchone()
            if found is None:
                return None
            held = db.execute(
                """SELECT 1 FROM asset_holds JOIN jobs ON jobs.id = asset_holds.job_id
                   WHERE asset_holds.asset_id = ? AND jobs.status IN (?, ?) LIMIT 1""",
                (asset_id, *UNFINISHED),
            ).fetchone()
            if held is not None:
                raise AssetInUse(asset_id)
            row = db.execute("DELETE FROM assets WHERE id = ? RETURNING *", (asset_id,)).fetchone()
            return _asset(row), not _unreferenced(db, [row["digest"]])

    def hold_assets(self, job_id: str, asset_ids: Iterable[str]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO asset_holds (asset_id, job_id) VALUES (?, ?)",
                [(asset_id, job_id) for asset_id in asset_ids],
            )

    def job_assets(self, owner: str, job_id: str) -> list[Asset]:
        rows = self._query(
            "SELECT * FROM assets WHERE owner = ? AND job_id = ? ORDER BY seq", (owner, job_id)
        )
        return [_asset(row) for row in rows]

    def forget_job_assets(self, job_id: str) -> set[str]:
        """Delete the records of a job's outputs (an earlier, interrupted run's); returns the digests no
        record names any more."""
        with self._transaction() as db:
            rows = db.execute("DELETE FROM assets WHERE job_id = ? RETURNING digest", (job_id,)).fetchall()
            return _unreferenced(db, (row["digest"] for row in rows))

    def expire_assets(self, now: float) -> set[str]:
        """Delete the uploads past their `expires_at`, the outputs of jobs whose record is gone (expired
        or deleted), and the holds of jobs no longer waiting or running; returns the digests no record
        names any more."""
        with self._transaction() as db:
            rows = db.execute(
                """DELETE FROM assets WHERE expires_at <= ?
                   OR (job_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = assets.job_id))
                   RETURNING digest""",
                (now,),
            ).fetchall()
            db.execute(
                """DELETE FROM asset_holds WHERE NOT EXISTS (
                       SELECT 1 FROM jobs WHERE jobs.id = asset_holds.job_id AND jobs.status IN (?, ?))
                   OR NOT EXISTS (SELECT 1 FROM assets WHERE assets.id = asset_holds.asset_id)""",
                UNFINISHED,
            )
            return _unreferenced(db, (row["digest"] for row in rows))

    def asset_digests(self) -> set[str]:
        return {row["digest"] for row in self._query("SELECT DISTINCT digest FROM assets")}
