"""SQLite connector: the embedded default, safe across threads and processes.

Each thread gets its own ``sqlite3`` connection in autocommit mode (``isolation_level=None``),
so that transactions are ours to start: ``BEGIN IMMEDIATE`` takes the write lock before the
first read, which is what makes a read-check-write turn safe when several processes share
the file. WAL lets readers proceed while one writer holds the lock; the busy timeout makes
writers queue instead of failing at once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clrk.errors import StoreError, StoreUnavailable
from clrk.state.connector import Connector, Params, Row

# Applied to every new connection. WAL + synchronous=NORMAL is durable against process
# crashes (what the multi-process tests kill) and loses at most the last commits on power loss.
_PRAGMAS = (
    "pragma synchronous = normal",
    "pragma foreign_keys = on",
)
_WAL = "pragma journal_mode = wal"

# Messages of sqlite3.OperationalError that mean "cannot use the database right now"
# rather than "this statement is wrong".
_UNAVAILABLE = ("unable to open", "database is locked", "disk i/o", "readonly", "busy")


def sqlite_path(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs.db`` -> ``/abs.db``."""
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    if not path:
        raise StoreUnavailable(url, "no database path in the URL")
    return path


class SqliteConnector(Connector):
    dialect = "sqlite"

    def __init__(self, url: str, *, timeout_seconds: float = 30.0) -> None:
        self.url = url
        self.path = sqlite_path(url)
        self._timeout_seconds = timeout_seconds
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        if self.path != ":memory:":
            with self._errors():
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._connection()  # fail now, not at first use, when the file cannot be opened

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The one place where sqlite3 errors become clrk errors."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if any(text in str(exc).lower() for text in _UNAVAILABLE):
                raise StoreUnavailable(self.url, str(exc)) from exc
            raise StoreError(f"sqlite: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite: {exc}") from exc
        except OSError as exc:
            raise StoreUnavailable(self.url, str(exc)) from exc

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise StoreError(f"connector for {self.url} is closed")
        with self._errors():
            conn = sqlite3.connect(
                self.path,
                timeout=self._timeout_seconds,
                isolation_level=None,
                check_same_thread=False,  # only so that close() may close it from any thread
            )
            conn.row_factory = sqlite3.Row
            _enable_wal(conn, self._timeout_seconds)
            for pragma in _PRAGMAS:
                conn.execute(pragma)
        self._local.conn = conn
        self._local.depth = 0
        with self._lock:
            self._connections.append(conn)
        return conn

    def execute(self, sql: str, params: Params = None) -> int:
        with self._errors():
            return self._connection().execute(sql, params or {}).rowcount

    def executescript(self, sql: str) -> None:
        # sqlite3.executescript() would COMMIT the open transaction first (and so drop the
        # migration lock); run the statements one by one instead, split where sqlite3 itself
        # says a statement is complete.
        conn = self._connection()
        with self._errors():
            for statement in split_statements(sql):
                conn.execute(statement)

    def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        with self._errors():
            row = self._connection().execute(sql, params or {}).fetchone()
        return dict(row) if row is not None else None

    def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        with self._errors():
            rows = self._connection().execute(sql, params or {}).fetchall()
        return [dict(row) for row in rows]

    @contextmanager
    def transaction(self) -> Iterator[None]:
        conn = self._connection()
        depth: int = self._local.depth
        savepoint = f"clrk_sp_{depth}"
        with self._errors():
            conn.execute(f"savepoint {savepoint}" if depth else "begin immediate")
        self._local.depth = depth + 1
        try:
            yield
        except BaseException:
            self._local.depth = depth
            with self._errors():
                if depth:
                    conn.execute(f"rollback to {savepoint}")
                    conn.execute(f"release {savepoint}")
                elif conn.in_transaction:
                    conn.execute("rollback")
            raise
        self._local.depth = depth
        with self._errors():
            try:
                conn.execute(f"release {savepoint}" if depth else "commit")
            except sqlite3.Error:
                if not depth and conn.in_transaction:
                    conn.execute("rollback")
                raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()


def _enable_wal(conn: sqlite3.Connection, timeout_seconds: float) -> None:
    """Switch to WAL, waiting for other connections that are doing the same.

    Turning a new file's journal to WAL takes an exclusive lock, and when another process
    is opening the same new file SQLite answers "database is locked" at once instead of
    through the busy timeout (seen with 8 processes starting together on an empty file):
    so retry here, for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            conn.execute(_WAL)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


def split_statements(script: str) -> list[str]:
    """Split a script into statements using ``sqlite3.complete_statement`` (trigger-safe)."""
    statements: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            if pending.strip().rstrip(";").strip() and not _only_comments(pending):
                statements.append(pending.strip())
            pending = ""
    if pending.strip() and not _only_comments(pending):
        statements.append(pending.strip())
    return statements


def _only_comments(text: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in text.splitlines())
