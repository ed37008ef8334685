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
from typing import Any

from engine.jobs.sqlite_connection import SqliteConnection
from engine.jobs.store import JobIdTaken, JobQuery
from engine.jobs.types import InsufficientCredits, Job, JobStatus, LogLine, NewJob, OutputFile, RunReport

MICROS = 1_000_000
"""Credits are stored as integer micro-credits so balances never drift."""

MAX_ATTEMPTS = 3
"""A job that was running when the server stopped this many times is failed, not retried again."""

QUEUE_ORDER = "COALESCE(number, seq), seq"
"""The order queued jobs run in: by `number` where one was given (ComfyUI's priority), else by arrival."""
ORDERS = {
    "queue": ("COALESCE(number, seq)", "seq"),
    "created": ("created_at", "seq"),
    "finished": ("finished_at IS NULL", "finished_at", "seq"),
    "duration": ("COALESCE(finished_at - started_at, 0)", "seq"),
}


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
        number=float(row["number"] if row["number"] is not None else row["seq"]),
        extra_data=json.loads(row["extra_data"]),
        targets=json.loads(row["targets"]) if row["targets"] is not None else None,
        report=RunReport.from_json(json.loads(row["report"])) if row["report"] is not None else None,
    )


def _where(query: JobQuery) -> tuple[str, list[Any]]:
    """The WHERE clause (and its arguments) selecting the jobs a query asks for."""
    clauses = ["1"]
    args: list[Any] = []
    if query.api is not None:
        clauses.append("api = ?")
        args.append(query.api)
    if query.owner is not None:
        clauses.append("key_id = ?")
        args.append(query.owner)
    if query.statuses is not None:
        clauses.append("status IN (SELECT value FROM json_each(?))")
        args.append(json.dumps(sorted(query.statuses)))
    if not query.dequeued:
        clauses.append("NOT (status = ? AND started_at IS NULL)")
        args.append(JobStatus.CANCELLED)
    if query.ids is not None:
        clauses.append("id IN (SELECT value FROM json_each(?))")
        args.append(json.dumps(sorted(query.ids)))
    if query.workflow_id is not None:
        clauses.append("json_extract(extra_data, '$.extra_pnginfo.workflow.id') = ?")
        args.append(query.workflow_id)
    return " AND ".join(clauses), args


class JobTable(SqliteConnection):
    def submit(self, new: NewJob) -> tuple[Job, bool]:
        """Store a job and reserve its cost; returns (job, created). With an idempotency key already
        used by the same API key, the existing job comes back instead and nothing is reserved. Raises
        JobIdTaken if the job's id is in use (ids are the client's choice in ComfyUI's API)."""
        cost = to_micros(new.cost)
        with self._transaction() as db:
            if new.idempotency_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE COALESCE(key_id, '') = ? AND idempotency_key = ?",
                    (new.key_id or "", new.idempotency_key),
                ).fetchone()
                if row is not None:
                    return _job(row), False
            if db.execute("SELECT 1 FROM jobs WHERE id = ?", (new.id,)).fetchone() is not None:
                raise JobIdTaken(new.id)
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
                                     key_id, idempotency_key, webhook_url, base_url, created_at, number,
                                     extra_data, targets)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *""",
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
                    new.number,
                    json.dumps(new.extra_data),
                    json.dumps(list(new.targets)) if new.targets is not None else None,
                ),
            ).fetchone()
            if new.front and new.number is None:  # ahead of every number given so far: minus its arrival
                row = db.execute(
                    "UPDATE jobs SET number = -seq WHERE seq = ? RETURNING *", (row["seq"],)
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
            f"SELECT COUNT(*) FROM jobs WHERE status = ? AND ({QUEUE_ORDER}) < (?, ?)",
            (JobStatus.QUEUED, job.number, job.seq),
        )
        return rows[0][0]

    def list_jobs(self, query: JobQuery) -> tuple[list[Job], int]:
        """A page of the jobs the query selects, in its order, and how many it selects in all."""
        where, args = _where(query)
        direction = "DESC" if query.descending else "ASC"
        order = ", ".join(f"{term} {direction}" for term in ORDERS[query.order])
        limit = query.limit if query.limit is not None else -1
        with self._lock:  # the page and the total from one state of the table
            rows = self._db.execute(
                f"SELECT * FROM jobs WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                (*args, limit, query.offset),
            ).fetchall()
            total = self._db.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", args).fetchone()[0]
        return [_job(row) for row in rows], total

    def forget(self, query: JobQuery) -> int:
        """Delete the finished jobs the query selects (ComfyUI's history delete and clear), with their
        logs and webhook records; queued and running jobs stay. Returns how many went."""
        where, args = _where(query)
        with self._transaction() as db:
            ids = [
                row["id"]
                for row in db.execute(
                    f"DELETE FROM jobs WHERE {where} AND finished_at IS NOT NULL RETURNING id", args
                ).fetchall()
            ]
            for job_id in ids:
                self._delete_records(db, job_id)
        return len(ids)

    @staticmethod
    def _delete_records(db: sqlite3.Connection, job_id: str) -> None:
        db.execute("DELETE FROM job_logs WHERE job_id = ?", (job_id,))
        db.execute("DELETE FROM webhook_deliveries WHERE job_id = ?", (job_id,))
        db.execute("DELETE FROM webhook_outbox WHERE job_id = ?", (job_id,))

    def queue_depth(self) -> int:
        return self._query("SELECT COUNT(*) FROM jobs WHERE status = ?", (JobStatus.QUEUED,))[0][0]

    def queue_depths(self) -> dict[str, int]:
        """Queued jobs per endpoint (endpoints with none are left out)."""
        rows = self._query(
            "SELECT endpoint, COUNT(*) FROM jobs WHERE status = ? GROUP BY endpoint", (JobStatus.QUEUED,)
        )
        return {row[0]: row[1] for row in rows}

    def claim(
        self, endpoints: frozenset[str] | None = None, preferred: frozenset[str] = frozenset()
    ) -> Job | None:
        """Move the first job in queue order to PROCESSING and return it: only of `endpoints` (None:
        any), and of the `preferred` ones before any other."""
        where, args = "status = ?", [str(JobStatus.QUEUED)]
        if endpoints is not None:
            where += " AND endpoint IN (SELECT value FROM json_each(?))"
            args.append(json.dumps(sorted(endpoints)))
        order = QUEUE_ORDER
        if preferred:
            order = f"endpoint IN (SELECT value FROM json_each(?)) DESC, {QUEUE_ORDER}"
            args.append(json.dumps(sorted(preferred)))
        with self._transaction() as db:
            row = db.execute(
                f"""UPDATE jobs SET status = ?, started_at = ?, attempts = attempts + 1
                   WHERE seq = (SELECT seq FROM jobs WHERE {where} ORDER BY {order} LIMIT 1)
                   RETURNING *""",
                (JobStatus.PROCESSING, time.time(), *args),
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

    def complete(
        self,
        job_id: str,
        outputs: list[OutputFile],
        metrics: dict[str, float],
        report: RunReport | None = None,
    ) -> Job | None:
        """PROCESSING -> COMPLETED, charging the reserved cost. None if the job was not processing."""
        with self._transaction() as db:
            return self._finish(
                db, job_id, JobStatus.COMPLETED, outputs=outputs, metrics=metrics, report=report
            )

    def fail(
        self,
        job_id: str,
        error: str,
        metrics: dict[str, float] | None = None,
        report: RunReport | None = None,
    ) -> Job | None:
        """PROCESSING -> FAILED, releasing the reservation."""
        with self._transaction() as db:
            return self._finish(db, job_id, JobStatus.FAILED, error=error, metrics=metrics, report=report)

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

    def dequeue(self, job_id: str) -> Job | None:
        """Cancel a job only if it is still queued (ComfyUI's queue delete, which never stops a running
        one); None if it is not queued."""
        with self._transaction() as db:
            row = db.execute(
                "UPDATE jobs SET status = ? WHERE id = ? AND status = ? RETURNING id",
                (JobStatus.PROCESSING, job_id, JobStatus.QUEUED),
            ).fetchone()
            if row is None:
                return None
            return self._finish(db, job_id, JobStatus.CANCELLED, error="cancelled by the client")

    def requeue(self, job_id: str) -> None:
        """The server is stopping: a running job goes back to the front of the queue, no attempt spent."""
        with self._transaction() as db:
            db.execute(
                """UPDATE jobs SET status = ?, started_at = NULL, attempts = MAX(attempts - 1, 0)
                   WHERE id = ? AND status = ?""",
                (JobStatus.QUEUED, job_id, JobStatus.PROCESSING),
            )

    def mark_cancelled(self, job_id: str, report: RunReport | None = None) -> Job | None:
        """The worker stopped a job the client cancelled."""
        with self._transaction() as db:
            return self._finish(
                db, job_id, JobStatus.CANCELLED, error="cancelled by the client", report=report
            )

    def _finish(
        self,
        db: sqlite3.Connection,
        job_id: str,
        status: JobStatus,
        *,
        outputs: list[OutputFile] | None = None,
        error: str | None = None,
        metrics: dict[str, float] | None = None,
        report: RunReport | None = None,
    ) -> Job | None:
        row = db.execute(
            """UPDATE jobs SET status = ?, finished_at = ?, outputs = ?, error = ?, metrics = ?, report = ?
               WHERE id = ? AND status = ? RETURNING *""",
            (
                status,
                time.time(),
                json.dumps([o.to_json() for o in outputs or []]),
                error,
                json.dumps(metrics or {}),
                json.dumps(report.to_json()) if report is not None else None,
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
                self._delete_records(db, row["id"])
        return [_job(row) for row in rows]
