"""Jobs and their logs in SQLite: submit, claim, finish, recover, expire.

Every state change that moves credits happens in the same transaction as the job's status change,
and only from the state it expects (a job is charged when it goes PROCESSING -> COMPLETED, at most
once), so a crash at any point can neither lose an accepted job nor charge it twice. Jobs left
PROCESSING by a crash are queued again when the store opens (`recover`). A finished job with a
webhook enters the webhook outbox in that same transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time

from engine.jobs.sqlite_connection import SqliteConnection
from engine.jobs.types import InsufficientCredits, Job, JobStatus, LogLine, NewJob, OutputFile

MICROS = 1_000_000
"""Credits are stored as integer micro-credits so balances never drift."""

MAX_ATTEMPTS = 3
"""A job that was running when the server stopped this many times is failed, not retried again."""


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


class JobTable(SqliteConnection):
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
