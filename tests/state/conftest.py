"""Backend fixtures: every state test runs on SQLite and on Postgres."""

from __future__ import annotations

from pathlib import Path

import pytest

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty database of each backend (Postgres: a fresh database per test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    return request.getfixturevalue("postgres_url")
