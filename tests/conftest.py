"""Shared fixtures: real servers, or a clear skip (a failure under CI=true)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import POSTGRES_URL, SLACK_FIXTURES, need_server

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend: a SQLite file, or a fresh Postgres database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'clrk.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def slack_fixtures() -> Path:
    if not SLACK_FIXTURES.is_dir():
        need_server("Slack fixtures", f"{SLACK_FIXTURES} not found (set CLRK_SLACK_FIXTURES)")
    return SLACK_FIXTURES


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # any failure to connect means: no server here
        need_server("PostgreSQL", f"{POSTGRES_URL}: {exc}")
    return POSTGRES_URL


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A fresh, empty database per test, dropped afterwards."""
    import psycopg

    name = f"clrk_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base = postgres_admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(postgres_admin_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')
