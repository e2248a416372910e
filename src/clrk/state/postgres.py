"""Postgres connector: psycopg 3 with a ``psycopg_pool.ConnectionPool`` (or one connection).

Calls outside a transaction borrow a pooled connection in autocommit mode for one statement.
:meth:`PostgresConnector.transaction` pins one pooled connection to the calling thread until
the block ends, so every call the thread makes inside the block runs in that transaction.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from typing import Any, TypeVar

import psycopg
import psycopg.errors
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolTimeout

from clrk.errors import Conflict, StoreError, StoreUnavailable
from clrk.state.connector import Connector, Params, Row

T = TypeVar("T")

# SQLSTATE classes that mean the server or the connection is gone, not that the SQL is wrong:
# 08 connection exception, 57P admin shutdown / crash shutdown / cannot connect now.
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53300")
# Seconds to wait for the pool's first connection before asking the driver what is wrong.
_PROBE_AFTER = 0.25
_CONNECTION_KWARGS: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}

# A quoted string or identifier, a comment, a ``:name`` placeholder (not ``::cast``), or a
# percent sign (which psycopg would read as a placeholder, so it must be doubled).
_TOKENS = re.compile(
    r"""(?P<skip>'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*)"""
    r"""|(?<!:):(?P<name>[A-Za-z_][A-Za-z0-9_]*)"""
    r"""|(?P<percent>%)"""
)


@lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """Rewrite ``:name`` placeholders to psycopg's ``%(name)s``; the only place that does."""

    def replace(match: re.Match[str]) -> str:
        if match.group("name"):
            return f"%({match.group('name')})s"
        if match.group("percent"):
            return "%%"
        return match.group(0)

    return _TOKENS.sub(replace, sql)


class _Pool:
    """Connections from a ``psycopg_pool.ConnectionPool``: what a server wants."""

    def __init__(self, url: str, max_size: int, timeout_seconds: float) -> None:
        self.url = url
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            kwargs=_CONNECTION_KWARGS,
            timeout=timeout_seconds,
            open=False,
            name="clrk",
            num_workers=min(3, max_size),
        )
        self._open(timeout_seconds)

    def _open(self, timeout_seconds: float) -> None:
        """Open the pool with its first connection, or fail naming why.

        The pool only ever reports "timed out", whereas the driver says why (refused,
        unknown database, bad password). A probe connection before every open would say it
        too, but costs a second server backend; so the driver is asked only when the pool
        is not up in ``_PROBE_AFTER`` seconds, which a healthy local server always is.
        """
        self._pool.open(wait=False)
        try:
            self._pool.wait(timeout=min(_PROBE_AFTER, timeout_seconds))
            return
        except PoolTimeout:
            pass
        try:
            connect_timeout = max(1, int(timeout_seconds))
            psycopg.connect(self.url, connect_timeout=connect_timeout).close()
            self._pool.wait(timeout=timeout_seconds)
        except BaseException:
            self._pool.close()
            raise

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        return self._pool.connection()

    def close(self) -> None:
        if not self._pool.closed:
            self._pool.close()


class _OneConnection:
    """One connection, shared under a lock: what a process that runs one turn wants.

    A pool of one buys such a process nothing but its worker threads (measured: 7 ms to
    open a pool of one against 5 ms for the connection alone, on every fresh sandbox). A
    connection found broken is replaced on the next use; the statement that found it
    broken fails with ``StoreUnavailable``, as it would from a pool.
    """

    def __init__(self, url: str, timeout_seconds: float) -> None:
        self.url = url
        self._timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        timeout = max(1, int(self._timeout_seconds))
        return psycopg.connect(self.url, connect_timeout=timeout, **_CONNECTION_KWARGS)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if not self._lock.acquire(timeout=self._timeout_seconds):
            raise PoolTimeout(f"the connection stayed busy for {self._timeout_seconds} s")
        try:
            if self._conn is None:
                raise psycopg.OperationalError("the connector is closed")
            if self._conn.closed or self._conn.broken:
                self._conn = self._connect()
            yield self._conn
        finally:
            self._lock.release()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresConnector(Connector):
    """Postgres through psycopg 3: a pool of ``max_size``, or with ``max_size=1`` one
    connection (see :class:`_OneConnection`)."""

    dialect = "postgres"

    def __init__(self, url: str, *, max_size: int = 10, timeout_seconds: float = 10.0) -> None:
        self.url = url
        self._local = threading.local()
        with self._errors():
            self._source: _Pool | _OneConnection = (
                _OneConnection(url, timeout_seconds)
                if max_size <= 1
                else _Pool(url, max_size, timeout_seconds)
            )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The one place where psycopg errors become clrk errors."""
        try:
            yield
        except PoolTimeout as exc:
            raise StoreUnavailable(self.url, f"no connection available: {exc}") from exc
        except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected) as exc:
            raise Conflict("", "serialization", None, exc.sqlstate) from exc
        except psycopg.OperationalError as exc:
            if exc.sqlstate is None or exc.sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
                raise StoreUnavailable(self.url, str(exc).strip()) from exc
            raise StoreError(f"postgres: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"postgres: {str(exc).strip()}") from exc

    def _run(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        with self._errors():
            if conn is not None:
                return work(conn)
            with self._source.connection() as pooled:
                return work(pooled)

    def execute(self, sql: str, params: Params = None) -> int:
        return self._run(lambda conn: conn.execute(to_pyformat(sql), params or {}).rowcount)

    def executescript(self, sql: str) -> None:
        # Without parameters psycopg sends the text as-is, several statements at once.
        self._run(lambda conn: conn.execute(sql))

    def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        return self._run(lambda conn: conn.execute(to_pyformat(sql), params or {}).fetchone())

    def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        return self._run(lambda conn: conn.execute(to_pyformat(sql), params or {}).fetchall())

    @contextmanager
    def transaction(self) -> Iterator[None]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is not None:  # nested: a savepoint on the pinned connection
            with self._errors(), conn.transaction():
                yield
            return
        with self._errors(), self._source.connection() as pooled:
            self._local.conn = pooled
            try:
                with pooled.transaction():
                    yield
            finally:
                self._local.conn = None

    def close(self) -> None:
        source = getattr(self, "_source", None)
        if source is not None:
            source.close()
