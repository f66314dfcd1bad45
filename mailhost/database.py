"""The directory database file as its users open it: WAL mode, one connection per thread.

The directory, the device registry and the ActiveSync administration tables share one
SQLite file. In WAL mode readers never wait for each other or for a writer, so each
thread gets its own connection and no Python lock stands between the event loop's
lookups and a worker thread's; writers are serialised by SQLite (BEGIN IMMEDIATE).
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_MS = 5000


class _Connection:
    """Owns one thread's connection; closed when the thread (and so this) goes away:
    trio retires idle worker threads, and their connections go with them."""

    __slots__ = ("__weakref__", "db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __del__(self) -> None:
        self.db.close()


class Database:
    def __init__(
        self, path: Path, *, synchronous: str = "FULL", error: type[Exception] = sqlite3.Error
    ) -> None:
        self.path = path
        self._synchronous = synchronous
        self._error = error
        self._local = threading.local()
        self._open: weakref.WeakSet[_Connection] = weakref.WeakSet()
        self._open_lock = threading.Lock()
        self.db.execute("PRAGMA journal_mode=WAL")

    @property
    def db(self) -> sqlite3.Connection:
        """This thread's connection (autocommit mode: use `transaction` to write)."""
        holder: _Connection | None = getattr(self._local, "holder", None)
        if holder is None:
            try:
                db = sqlite3.connect(
                    self.path,
                    timeout=BUSY_TIMEOUT_MS / 1000,
                    check_same_thread=False,
                    isolation_level=None,
                )
                db.execute(f"PRAGMA synchronous={self._synchronous}")
                db.execute("PRAGMA foreign_keys=ON")
                db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            except sqlite3.Error as exc:
                raise self._error(f"{self.path}: {exc}") from None
            holder = _Connection(db)
            self._local.holder = holder
            with self._open_lock:
                self._open.add(holder)
        return holder.db

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    def create(self, schema: str, *, meta_table: str, version: int, what: str) -> None:
        """Run `schema` (CREATE ... IF NOT EXISTS statements, `meta_table` among them, a
        key/value table) in one transaction, then record `version` in `meta_table`,
        refusing a file written by a newer program (it may hold what we cannot read)."""
        self.db.executescript("BEGIN IMMEDIATE;" + schema + "COMMIT;")
        with self.transaction() as db:
            row = db.execute(
                f"SELECT value FROM {meta_table} WHERE key='schema_version'"  # noqa: S608
            ).fetchone()
            found = int(row[0]) if row else 0
            if found > version:
                raise self._error(
                    f"{self.path}: {what} schema {found} is newer than this program knows"
                )
            db.execute(
                f"INSERT OR REPLACE INTO {meta_table}(key, value) VALUES('schema_version', ?)",
                (str(version),),
            )

    def data_version(self) -> tuple[int, int, int]:
        """Changes whenever anyone commits: another connection (the CLI, another thread:
        PRAGMA data_version) or this one (its count of changes). A cheap cache key; it is
        per connection, hence per thread, and the thread is part of it."""
        db = self.db
        return (
            threading.get_ident(),
            int(db.execute("PRAGMA data_version").fetchone()[0]),
            db.total_changes,
        )

    def close(self) -> None:
        with self._open_lock:
            holders, self._open = list(self._open), weakref.WeakSet()
        for holder in holders:
            holder.db.close()
        self._local = threading.local()
