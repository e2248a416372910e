"""The connector: the small database interface that clrk's stores are written over.

Domain code (the turn protocol, the runtime inbox, the LangGraph saver) talks to a
:class:`Connector` and never imports a driver; only ``sqlite.py`` and ``postgres.py`` do.
That keeps the SQLite/Postgres difference in two files plus one ``.sql`` file per dialect.

Conventions every connector follows:

* **Parameters are named, ``:name`` style, in both dialects** (``where key = :key``), passed
  as a mapping. SQLite understands this natively; the Postgres connector rewrites it to
  psycopg's ``%(name)s`` in one place (:func:`clrk.state.postgres.to_pyformat`). ``::type``
  casts are left alone.
* **Rows are dicts** keyed by column name.
* **Autocommit outside** :meth:`Connector.transaction`; inside it, every call made by the same
  thread runs in that transaction. A nested ``transaction()`` is a savepoint. On SQLite the
  outer transaction is ``BEGIN IMMEDIATE`` (it takes the write lock up front, so two writers
  never deadlock on a lock upgrade).
* **Thread safe**: each thread gets its own connection (SQLite) or borrows one from the pool
  for each call or transaction (Postgres).
* **Driver errors never escape**: each backend maps them in one context manager to
  :mod:`clrk.errors` (``StoreUnavailable`` with the URL masked, ``Conflict`` for
  serialization failures, ``StoreError`` otherwise), with the cause chained.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Self

from clrk.errors import ConfigError

Params = Mapping[str, Any] | None
Row = dict[str, Any]

SUPPORTED_SCHEMES = ("sqlite:///", "postgresql://", "postgres://")


class Connector(abc.ABC):
    """A database handle with five operations, the same for every dialect."""

    #: ``"sqlite"`` or ``"postgres"``; picks the ``.sql`` file and the migrations folder.
    dialect: str
    #: The URL it was opened with (mask it with :func:`clrk.errors.mask_url` before showing).
    url: str

    @abc.abstractmethod
    def execute(self, sql: str, params: Params = None) -> int:
        """Run one statement; return the number of rows it changed."""

    @abc.abstractmethod
    def executescript(self, sql: str) -> None:
        """Run several statements without parameters (migration files)."""

    @abc.abstractmethod
    def fetch_one(self, sql: str, params: Params = None) -> Row | None:
        """Run one statement; return its first row, or ``None``."""

    @abc.abstractmethod
    def fetch_all(self, sql: str, params: Params = None) -> list[Row]:
        """Run one statement; return all its rows."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Commit on normal exit, roll back on an exception (which is re-raised)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_connector(url: str, **options: Any) -> Connector:
    """Open a connector for ``url``.

    ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db`` (the parent folder is
    created); ``postgresql://user:pass@host:port/db`` (a psycopg connection pool; options
    ``max_size`` and ``timeout_seconds``). Raises ``ConfigError`` for any other scheme and
    ``StoreUnavailable`` when the database cannot be opened.
    """
    if url.startswith("sqlite:///"):
        from clrk.state.sqlite import SqliteConnector

        return SqliteConnector(url, **options)
    if url.startswith(("postgresql://", "postgres://")):
        from clrk.state.postgres import PostgresConnector

        return PostgresConnector(url, **options)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise ConfigError(
        f"unsupported store URL scheme {scheme!r}; supported: {', '.join(SUPPORTED_SCHEMES)}"
    )
