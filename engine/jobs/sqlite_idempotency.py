"""Comfy API v2's single-use Idempotency-Keys in SQLite: a key is claimed once per owner and operation.

Reject-on-duplicate, not record-and-replay: the first request to present a key claims it, any later one
is refused, until the claim is older than the keys' lifetime (24 hours in the specification) or was
released because its request definitively failed.
"""

from __future__ import annotations

from engine.jobs.sqlite_connection import SqliteConnection


class IdempotencyTable(SqliteConnection):
    def claim_idempotency_key(self, owner: str, scope: str, key: str, now: float, lifetime: float) -> bool:
        """True if this request now holds the key; False if a live claim already does."""
        with self._transaction() as db:
            db.execute("DELETE FROM idempotency_keys WHERE claimed_at < ?", (now - lifetime,))
            cursor = db.execute(
                """INSERT INTO idempotency_keys (owner, scope, key, claimed_at) VALUES (?, ?, ?, ?)
                   ON CONFLICT DO NOTHING""",
                (owner, scope, key, now),
            )
            return cursor.rowcount == 1

    def release_idempotency_key(self, owner: str, scope: str, key: str) -> None:
        with self._transaction() as db:
            db.execute(
                "DELETE FROM idempotency_keys WHERE owner = ? AND scope = ? AND key = ?", (owner, scope, key)
            )
