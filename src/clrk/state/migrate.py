"""Numbered schema migrations, applied exactly once, safe when many processes start at once.

A component (``"state"``, ``"runtime"``, ``"langgraph"``) keeps files named
``NNNN_what.sql`` in ``<package>/migrations/<dialect>/``. :func:`run_migrations` applies the
ones not yet recorded in ``clrk_migrations``, in order, together with their records in
one transaction (a failing file leaves the schema as it was).

Why a lock: ``CREATE TABLE IF NOT EXISTS`` is not safe against itself on Postgres (two
sessions can both pass the check and one dies on a catalog unique index). So the whole
check-and-apply runs in one transaction holding ``pg_advisory_xact_lock`` on Postgres, or
the ``BEGIN IMMEDIATE`` write lock on SQLite; late starters wait, then find nothing to do.

Why it stays off the hot path: call it once when opening a store. When the schema is
current, the cost is one indexed query with no lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from clrk.errors import ConfigError, StoreError, StoreUnavailable
from clrk.state.connector import Connector
from clrk.state.queries import load_queries

_FILENAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[A-Za-z0-9_]+)\.sql$")

# pg_advisory_xact_lock key shared by every component: migrations are rare, one lock is enough.
_LOCK_KEY = 0x636C726B  # "clrk"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def find_migrations(package: str, dialect: str) -> list[Migration]:
    """The migration files of ``package`` for ``dialect``, in version order."""
    folder = resources.files(package) / "migrations" / dialect
    if not folder.is_dir():
        raise ConfigError(f"no migrations for dialect {dialect!r} in {package}")
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILENAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group("version"))
        if version in found:
            raise ConfigError(f"{package}: two migrations numbered {version:04d}")
        found[version] = Migration(version, match.group("name"), entry.read_text("utf-8"))
    return [found[version] for version in sorted(found)]


def run_migrations(connector: Connector, package: str, component: str) -> list[int]:
    """Apply ``package``'s pending migrations for ``component``; return the versions applied."""
    migrations = find_migrations(package, connector.dialect)
    if not migrations:
        return []
    queries = load_queries(__package__ or "clrk.state", connector.dialect)
    latest = migrations[-1].version
    try:
        row = connector.fetch_one(queries["migrations_latest"], {"component": component})
        if row is not None and row["version"] is not None and row["version"] >= latest:
            return []
    except StoreUnavailable:
        raise
    except StoreError:
        pass  # no clrk_migrations table yet: the locked path below creates it
    applied_now: list[int] = []
    with connector.transaction():
        connector.execute(queries["migrations_lock"], {"lock_key": _LOCK_KEY})
        connector.executescript(queries["migrations_create_table"])
        rows = connector.fetch_all(queries["migrations_applied"], {"component": component})
        applied = {row["version"] for row in rows}
        for migration in migrations:
            if migration.version in applied:
                continue
            connector.executescript(migration.sql)
            connector.execute(
                queries["migrations_record"],
                {"component": component, "version": migration.version, "name": migration.name},
            )
            applied_now.append(migration.version)
    return applied_now
