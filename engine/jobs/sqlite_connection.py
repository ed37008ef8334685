"""One SQLite connection shared by the store's tables: opening, migrating, transactions.

One connection guarded by a lock serves every caller: statements take microseconds, and SQLite
serialises writers anyway. WAL journaling with synchronous=NORMAL survives a killed process; only an
operating-system crash can lose the last commits.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from engine.jobs.sqlite_schema import MIGRATIONS


class SchemaTooNew(RuntimeError):
    """The database was written by a newer engine; reading it could misread or damage it."""


class SqliteConnection:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            self._db.close()
            raise SchemaTooNew(
                f"{self.path} has schema version {version}, newer than this engine's {len(MIGRATIONS)}: "
                "upgrade the engine, or point it at another data folder"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._lock:  # executescript commits first, so each step is its own explicit transaction
                try:
                    self._db.executescript(
                        f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
                    )
                except sqlite3.Error:
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise

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
