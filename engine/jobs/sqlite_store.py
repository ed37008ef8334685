"""The embedded job store: jobs, their logs, API keys and webhooks in one SQLite file.

Each group of tables has its module (sqlite_jobs, sqlite_keys, sqlite_webhooks) over one shared
connection (sqlite_connection) and one versioned schema (sqlite_schema). This synchronous store is
what the command line uses; the service reaches it through `AsyncSqliteStore`, off the event loop.
"""

from __future__ import annotations

from engine.jobs.sqlite_jobs import MAX_ATTEMPTS, JobTable
from engine.jobs.sqlite_keys import KeyTable
from engine.jobs.sqlite_webhooks import WebhookTable

__all__ = ["MAX_ATTEMPTS", "SqliteStore"]


class SqliteStore(JobTable, KeyTable, WebhookTable):
    """All the tables over one connection."""
