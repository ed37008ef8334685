"""The embedded job store: jobs, their logs, API keys, webhooks and assets in one SQLite file.

Each group of tables has its module (sqlite_jobs, sqlite_keys, sqlite_webhooks, sqlite_idempotency,
and engine.assets.sqlite_assets) over one shared connection (sqlite_connection) and one versioned schema
(sqlite_schema). This synchronous store is what the command line uses; the service reaches it through
`AsyncSqliteStore`, off the event loop.
"""

from __future__ import annotations

from engine.assets.sqlite_assets import AssetTable
from engine.jobs.sqlite_idempotency import IdempotencyTable
from engine.jobs.sqlite_jobs import MAX_ATTEMPTS, JobTable
from engine.jobs.sqlite_keys import KeyTable
from engine.jobs.sqlite_webhooks import WebhookTable

__all__ = ["MAX_ATTEMPTS", "SqliteStore"]


class SqliteStore(JobTable, KeyTable, WebhookTable, AssetTable, IdempotencyTable):
    """All the tables over one connection."""
