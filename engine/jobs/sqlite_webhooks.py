"""The webhook outbox and delivery log in SQLite."""

from __future__ import annotations

import time

from engine.jobs.sqlite_connection import SqliteConnection
from engine.jobs.store import Delivery, WebhookDue


class WebhookTable(SqliteConnection):
    def claim_webhook(self, now: float, lease_seconds: float) -> WebhookDue | None:
        """The most overdue webhook, leased for `lease_seconds`: if the sender dies mid-attempt, the
        lease runs out and the attempt is made again (receivers dedupe on `webhook-id`)."""
        with self._transaction() as db:
            row = db.execute(
                """UPDATE webhook_outbox SET attempts = attempts + 1, due_at = ?
                   WHERE job_id = (SELECT job_id FROM webhook_outbox WHERE due_at <= ?
                                   ORDER BY due_at LIMIT 1) RETURNING *""",
                (now + lease_seconds, now),
            ).fetchone()
        return WebhookDue(row["job_id"], row["url"], row["attempts"]) if row is not None else None

    def webhook_attempted(
        self, due: WebhookDue, status_code: int | None, error: str | None, retry_at: float | None
    ) -> None:
        """Log the attempt; then retry at `retry_at`, or leave the outbox (delivered or given up)."""
        with self._transaction() as db:
            db.execute(
                """INSERT INTO webhook_deliveries (job_id, attempt, at, url, status_code, error)
                   VALUES (?, ?, ?, ?, ?, ?)""",
                (due.job_id, due.attempt, time.time(), due.url, status_code, error),
            )
            if retry_at is None:
                db.execute("DELETE FROM webhook_outbox WHERE job_id = ?", (due.job_id,))
            else:
                db.execute("UPDATE webhook_outbox SET due_at = ? WHERE job_id = ?", (retry_at, due.job_id))

    def next_webhook_at(self) -> float | None:
        return self._query("SELECT MIN(due_at) FROM webhook_outbox")[0][0]

    def deliveries(self, job_id: str) -> list[Delivery]:
        rows = self._query("SELECT * FROM webhook_deliveries WHERE job_id = ? ORDER BY rowid", (job_id,))
        return [
            Delivery(row["job_id"], row["attempt"], row["at"], row["url"], row["status_code"], row["error"])
            for row in rows
        ]
