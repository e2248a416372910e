"""Migrations: applied once, recorded, safe when 8 processes start together."""

from __future__ import annotations

import multiprocessing

import pytest

from clrk.errors import ConfigError
from clrk.state import load_queries, open_connector, run_migrations
from clrk.state.migrate import find_migrations
from clrk.state.queries import parse_queries


def test_both_dialects_define_the_same_queries() -> None:
    """Same names, except the commit follow-ups that only a dialect without DML in CTEs needs."""
    sqlite = set(load_queries("clrk.state", "sqlite"))
    postgres = set(load_queries("clrk.state", "postgres"))
    assert postgres <= sqlite
    assert sqlite - postgres == {
        "turn_commit_consumed",
        "turn_commit_outbox",
        "turn_commit_history",
    }


def test_both_dialects_have_the_same_migrations() -> None:
    sqlite = [(m.version, m.name) for m in find_migrations("clrk.state", "sqlite")]
    postgres = [(m.version, m.name) for m in find_migrations("clrk.state", "postgres")]
    assert sqlite == postgres and sqlite


def test_query_file_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="defined twice"):
        parse_queries("-- name: a\nselect 1\n-- name: a\nselect 2\n")
    with pytest.raises(ConfigError, match="empty"):
        parse_queries("-- name: a\n-- only a comment\n-- name: b\nselect 1")
    assert parse_queries("-- name: a\n-- why\nselect 1\n\n-- name: b\nselect 2") == {
        "a": "-- why\nselect 1",
        "b": "select 2",
    }


def test_applied_once_and_recorded(store_url: str) -> None:
    with open_connector(store_url) as db:
        first = run_migrations(db, "clrk.state", "state")
        assert first == [m.version for m in find_migrations("clrk.state", db.dialect)]
        assert run_migrations(db, "clrk.state", "state") == []
        rows = db.fetch_all("select component, version, name from clrk_migrations order by version")
        assert rows == [
            {"component": "state", "version": 1, "name": "state"},
            {"component": "state", "version": 2, "name": "outbox_failure"},
        ]
        assert db.fetch_one("select count(*) as c from clrk_state") == {"c": 0}


def _migrate(url: str, barrier: multiprocessing.synchronize.Barrier) -> list[int]:
    barrier.wait(30)
    with open_connector(url) as db:
        return run_migrations(db, "clrk.state", "state")


def test_eight_processes_start_together_on_an_empty_database(store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(8)
        with ctx.Pool(8) as pool:
            results = pool.starmap(_migrate, [(store_url, barrier)] * 8)
    count = len(find_migrations("clrk.state", "sqlite"))
    assert sorted(len(r) for r in results) == [0] * 7 + [count]  # one process did them all
    with open_connector(store_url) as db:
        assert db.fetch_one("select count(*) as c from clrk_migrations") == {"c": count}
