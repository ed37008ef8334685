"""The embedded job store: jobs, their logs, API keys and credit balances in one SQLite file.

Every state change that moves credits happens in the same transaction as the job's status change,
and only from the state it expects (a job is charged when it goes PROCESSING -> COMPLETED, at most
once), so a crash at any point can neither lose an accepted job nor charge it twice. Jobs left
PROCESSING by a crash are queued again when the store opens (`recover`).

One connection guarded by a lock serves the API's event loop and the worker thread: statements
take microseconds, and SQLite serialises writers anyway. WAL journaling with synchronous=NORMAL
survives a killed process; only an operating-system crash can lose the last commits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.jobs.keys import hash_secret, new_key_id, new_secret
from engine.jobs.store import Delivery, WebhookDue
from engine.jobs.types import ApiKey, InsufficientCredits, Job, JobStatus, LogLine, NewJob, OutputFile

MICROS = 1_000_000
"""Credits are stored as integer micro-credits so balances never drift."""

MAX_ATTEMPTS = 3
"""A job that was running when the server stopped this many times is failed, not retried again."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    endpoint TEXT NOT NULL,
    api TEXT NOT NULL,
    status TEXT NOT NULL,
    params TEXT NOT NULL,
    prompt TEXT NOT NULL,
    output_node TEXT NOT NULL,
    cost_micros INTEGER NOT NULL,
    key_id TEXT,
    idempotency_key TEXT,
    webhook_url TEXT,
    base_url TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    outputs TEXT,
    error TEXT,
    metrics TEXT,
    progress_value REAL,
    progress_total REAL,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (COALESCE(key_id, ''), idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE TABLE IF NOT EXISTS job_logs (
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS job_logs_job ON job_logs (job_id);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_hash TEXT NOT NULL UNIQUE,
    balance_micros INTEGER NOT NULL,
    reserved_micros INTEGER NOT NULL DEFAULT 0,
    rate_per_minute INTEGER NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    url TEXT NOT NULL,
    status_code INTEGER,
    error TEXT
);
CREATE TABLE IF NOT EXISTS webhook_outbox (
    job_id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (due_at);
"""


def to_micros(credits: float) -> int:
    return round(credits * MICROS)


def _job(row: sqlite3.Row) -> Job:
    progress = None
    if row["progress_total"] is not None:
        progress = (row["progress_value"], row["progress_total"])
    return Job(
        id=row["id"],
        seq=row["seq"],
        endpoint=row["endpoint"],
        api=row["api"],
        status=JobStatus(row["status"]),
        params=json.loads(row["params"]),
        prompt=json.loads(row["prompt"]),
        output_node=row["output_node"],
        cost=row["cost_micros"] / MICROS,
        key_id=row["key_id"],
        idempotency_key=row["idempotency_key"],
        webhook_url=row["webhook_url"],
        base_url=row["base_url"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        outputs=[OutputFile.from_json(o) for o in json.loads(row["outputs"] or "[]")],
        error=row["error"],
        metrics=json.loads(row["metrics"] or "{}"),
        progress=progress,
        attempts=row["attempts"],
        cancel_requested=bool(row["cancel_requested"]),
    )


def _key(row: sqlite3.Row) -> ApiKey:
    return ApiKey(
        id=row["id"],
        name=row["name"],
        balance=row["balance_micros"] / MICROS,
        reserved=row["reserved_micros"] / MICROS,
        rate_per_minute=row["rate_per_minute"],
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


class SqliteStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- jobs ------------------------------------------------------------------------------------------

    def submit(self, new: NewJob) -> tuple[Job, bool]:
        """Store a job and reserve its cost; returns (job, created). With an idempotency key already
        used by the same API key, the existing job comes back instead and nothing is reserved."""
        cost = to_micros(new.cost)
        with self._transaction() as db:
            if new.idempotency_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE COALESCE(key_id, '') = ? AND idempotency_key = ?",
                    (new.key_id or "", new.idempotency_key),
                ).fetchone()
                if row is not None:
                    return _job(row), False
            if new.key_id is not None and cost:
                key = db.execute(
                    "SELECT balance_micros - reserved_micros AS available FROM api_keys WHERE id = ?",
                    (new.key_id,),
                ).fetchone()
                if key is None or key["available"] < cost:
                    available = key["available"] / MICROS if key is not None else 0.0
                    raise InsufficientCredits(new.cost, available)
                db.execute(
                    "UPDATE api_keys SET reserved_micros = reserved_micros + ? WHERE id = ?",
                    (cost, new.key_id),
                )
            row = db.execute(
                """INSERT INTO jobs (id, endpoint, api, status, params, prompt, output_node, cost_micros,
                                     key_id, idempotency_key, webhook_url, base_url, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *""",
                (
                    new.id,
                    new.endpoint,
                    new.api,
                    JobStatus.QUEUED,
                    json.dumps(new.params),
                    json.dumps(new.prompt),
                    new.output_node,
                    cost,
                    new.key_id,
                    new.idempotency_key,
                    new.webhook_url,
                    new.base_url,
                    time.time(),
                ),
            ).fetchone()
        return _job(row), True

    def get(self, job_id: str) -> Job | None:
        rows = self._query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def statuses(self, job_ids: list[str]) -> dict[str, JobStatus]:
        """The status of each of these jobs that the store knows."""
        found: dict[str, JobStatus] = {}
        for start in range(0, len(job_ids), 500):  # stay under SQLite's limit on bound parameters
            chunk = job_ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in self._query(f"SELECT id, status FROM jobs WHERE id IN ({marks})", tuple(chunk)):
                found[row["id"]] = JobStatus(row["status"])
        return found

    def queue_position(self, job: Job) -> int | None:
        """How many queued jobs are ahead of this one (0: it runs next); None once it has left the queue."""
        if job.status != JobStatus.QUEUED:
            return None
        rows = self._query(
            "SELECT COUNT(*) FROM jobs WHERE status = ? AND seq < ?", (JobStatus.QUEUED, job.seq)
        )
        return rows[0][0]

    def queue_depth(self) -> int:
        return self._query("SELECT COUNT(*) FROM jobs WHERE status = ?", (JobStatus.QUEUED,))[0][0]

    def claim(self) -> Job | None:
        """Move the oldest queued job to PROCESSING and return it."""
        with self._transaction() as db:
            row = db.execute(
                """UPDATE jobs SET status = ?, started_at = ?, attempts = attempts + 1
                   WHERE seq = (SELECT seq FROM jobs WHERE status = ? ORDER BY seq LIMIT 1) RETURNING *""",
                (JobStatus.PROCESSING, time.time(), JobStatus.QUEUED),
            ).fetchone()
        return _job(row) if row is not None else None

    def recover(self) -> tuple[int, int]:
        """After a crash: queue interrupted jobs again, failing those interrupted too often.
        Returns (requeued, failed). Call once, before any worker starts."""
        with self._transaction() as db:
            stuck = db.execute("SELECT * FROM jobs WHERE status = ?", (JobStatus.PROCESSING,)).fetchall()
            requeued = failed = 0
            for row in stuck:
                if row["cancel_requested"]:
                    self._finish(db, row["id"], JobStatus.CANCELLED, error="cancelled by the client")
                elif row["attempts"] >= MAX_ATTEMPTS:
                    message = f"the server stopped while running this job {row['attempts']} times; giving up"
                    self._finish(db, row["id"], JobStatus.FAILED, error=message)
                    failed += 1
                else:
                    db.execute(
                        """UPDATE jobs SET status = ?, started_at = NULL, progress_value = NULL,
                                           progress_total = NULL WHERE id = ?""",
                        (JobStatus.QUEUED, row["id"]),
                    )
                    requeued += 1
        return requeued, failed

    def set_progress(self, job_id: str, value: float, total: float) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET progress_value = ?, progress_total = ? WHERE id = ?", (value, total, job_id)
            )

    def complete(self, job_id: str, outputs: list[OutputFile], metrics: dict[str, float]) -> Job | None:
        """PROCESSING -> COMPLETED, charging the reserved cost. None if the job was not processing."""
        with self._transaction() as db:
            return self._finish(db, job_id, JobStatus.COMPLETED, outputs=outputs, metrics=metrics)

    def fail(self, job_id: str, error: str, metrics: dict[str, float] | None = None) -> Job | None:
        """PROCESSING -> FAILED, releasing the reservation."""
        with self._transaction() as db:
            return self._finish(db, job_id, JobStatus.FAILED, error=error, metrics=metrics)

    def cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once; a processing one is marked for the worker to interrupt."""
        with self._transaction() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == JobStatus.QUEUED:
                db.execute("UPDATE jobs SET status = ? WHERE id = ?", (JobStatus.PROCESSING, job_id))
                return self._finish(db, job_id, JobStatus.CANCELLED, error="cancelled by the client")
            if row["status"] == JobStatus.PROCESSING:
                row = db.execute(
                    "UPDATE jobs SET cancel_requested = 1 WHERE id = ? RETURNING *", (job_id,)
                ).fetchone()
            return _job(row)

    def requeue(self, job_id: str) -> None:
        """The server is stopping: a running job goes back to the front of the queue, no attempt spent."""
        with self._transaction() as db:
            db.execute(
                """UPDATE jobs SET status = ?, started_at = NULL, attempts = MAX(attempts - 1, 0)
                   WHERE id = ? AND status = ?""",
                (JobStatus.QUEUED, job_id, JobStatus.PROCESSING),
            )

    def mark_cancelled(self, job_id: str) -> Job | None:
        """The worker stopped a job the client cancelled."""
        with self._transaction() as db:
            return self._finish(db, job_id, JobStatus.CANCELLED, error="cancelled by the client")

    def _finish(
        self,
        db: sqlite3.Connection,
        job_id: str,
        status: JobStatus,
        *,
        outputs: list[OutputFile] | None = None,
        error: str | None = None,
        metrics: dict[str, float] | None = None,
    ) -> Job | None:
        row = db.execute(
            """UPDATE jobs SET status = ?, finished_at = ?, outputs = ?, error = ?, metrics = ?
               WHERE id = ? AND status = ? RETURNING *""",
            (
                status,
                time.time(),
                json.dumps([o.to_json() for o in outputs or []]),
                error,
                json.dumps(metrics or {}),
                job_id,
                JobStatus.PROCESSING,
            ),
        ).fetchone()
        if row is None:
            return None
        if row["webhook_url"] is not None:  # queued for delivery in the same commit: never lost
            db.execute(
                "INSERT OR IGNORE INTO webhook_outbox (job_id, url, due_at) VALUES (?, ?, ?)",
                (job_id, row["webhook_url"], time.time()),
            )
        if row["key_id"] is not None and row["cost_micros"]:
            charge = row["cost_micros"] if status == JobStatus.COMPLETED else 0
            db.execute(
                """UPDATE api_keys SET reserved_micros = reserved_micros - ?,
                                       balance_micros = balance_micros - ? WHERE id = ?""",
                (row["cost_micros"], charge, row["key_id"]),
            )
        return _job(row)

    def add_log(self, job_id: str, message: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO job_logs (job_id, at, message) VALUES (?, ?, ?)", (job_id, time.time(), message)
            )

    def logs(self, job_id: str) -> list[LogLine]:
        rows = self._query("SELECT message, at FROM job_logs WHERE job_id = ? ORDER BY rowid", (job_id,))
        return [LogLine(row["message"], row["at"]) for row in rows]

    def expire(self, finished_before: float) -> list[Job]:
        """Delete jobs finished before the cutoff (their results are no longer served); returns them so
        their files can be removed."""
        with self._transaction() as db:
            rows = db.execute(
                "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ? RETURNING *",
                (finished_before,),
            ).fetchall()
            for row in rows:
                db.execute("DELETE FROM job_logs WHERE job_id = ?", (row["id"],))
                db.execute("DELETE FROM webhook_deliveries WHERE job_id = ?", (row["id"],))
                db.execute("DELETE FROM webhook_outbox WHERE job_id = ?", (row["id"],))
        return [_job(row) for row in rows]

    # -- webhook deliveries ------------------------------------------------------------------------------

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

    # -- API keys ------------------------------------------------------------------------------------------

    def add_key(self, name: str, credits: float, rate_per_minute: int) -> tuple[ApiKey, str]:
        """Create a key; the secret is returned once and only its hash is stored."""
        secret = new_secret()
        with self._transaction() as db:
            row = db.execute(
                """INSERT INTO api_keys (id, name, secret_hash, balance_micros, rate_per_minute, created_at)
                   VALUES (?, ?, ?, ?, ?, ?) RETURNING *""",
                (new_key_id(), name, hash_secret(secret), to_micros(credits), rate_per_minute, time.time()),
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
