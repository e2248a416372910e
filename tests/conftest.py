"""Shared fixtures: real servers, or a clear skip (a failure under CI=true)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get(
    "CLRK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLRK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _find_fixtures() -> Path:
    """Slack fixtures live in the shared folder beside the project (../shared/fixtures/slack)."""
    env = os.environ.get("CLRK_SLACK_FIXTURES")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for base in [here.parent, *here.parents]:
        candidate = base / "shared" / "fixtures" / "slack"
        if candidate.is_dir():
            return candidate
        candidate = base.parent / "shared" / "fixtures" / "slack"
        if candidate.is_dir():
            return candidate
    return here / "fixtures" / "slack"


SLACK_FIXTURES = _find_fixtures()


def need_server(what: str, reason: str) -> None:
    """Skip on a laptop without the server; fail under CI so CI never passes by skipping."""
    message = f"{what} unreachable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: servers must be up)")
    pytest.skip(message)


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
