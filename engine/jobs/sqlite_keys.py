"""API keys and their credit balances in SQLite. Secrets are never stored, only their hashes."""

from __future__ import annotations

import sqlite3
import time

from engine.jobs.keys import hash_secret, new_key_id, new_secret
from engine.jobs.sqlite_connection import SqliteConnection
from engine.jobs.sqlite_jobs import MICROS, to_micros
from engine.jobs.types import ApiKey


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        balance=row["balance_micros"] / MICROS,
        reserved=row["reserved_micros"] / MICROS,
        rate_per_minute=row["rate_per_minute"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
        admin=bool(row["admin"]),
    )


class KeyTable(SqliteConnection):
    def add_key(
        self, name: str, credits: float, rate_per_minute: int, *, admin: bool = False
    ) -> tuple[ApiKey, str]:
        """Create a key; the secret is returned once and only its hash is stored."""
        secret = new_secret()
        with self._transaction() as db:
            row = db.execute(
                """INSERT INTO api_keys
                       (id, name, secret_hash, balance_micros, rate_per_minute, created_at, admin)
                   VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *""",
                (
                    new_key_id(),
                    name,
                    hash_secret(secret),
                    to_micros(credits),
                    rate_per_minute,
                    time.time(),
                    int(admin),
                ),
            ).fetchone()
        return _key(row), secret

    def list_keys(self) -> list[ApiKey]:
        return [_key(row) for row in self._query("SELECT * FROM api_keys ORDER BY created_at")]

    def key(self, key_id: str) -> ApiKey | None:
        rows = self._query("SELECT * FROM api_keys WHERE id = ?", (key_id,))
        return _key(rows[0]) if rows else None

    def has_keys(self) -> bool:
        return bool(self._query("SELECT 1 FROM api_keys WHERE revoked_at IS NULL LIMIT 1"))

    def authenticate(self, secret: str) -> ApiKey | None:
        """The live key with this secret. Looked up by its hash, so no comparison ever touches the secret."""
        rows = self._query(
            "SELECT * FROM api_keys WHERE secret_hash = ? AND revoked_at IS NULL", (hash_secret(secret),)
        )
        return _key(rows[0]) if rows else None

    def revoke_key(self, key_id: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), key_id),
            )
            return cursor.rowcount == 1

    def add_credits(self, key_id: str, credits: float) -> ApiKey | None:
        with self._transaction() as db:
            row = db.execute(
                "UPDATE api_keys SET balance_micros = balance_micros + ? WHERE id = ? RETURNING *",
                (to_micros(credits), key_id),
            ).fetchone()
        return _key(row) if row is not None else None
