"""Backend fixtures: every state test runs on SQLite and on Postgres."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clrk.state import Store, open_store


@pytest.fixture
def store_url(backend_url: str) -> str:
    """A URL of an empty database of each backend (see ``backend_url``)."""
    return backend_url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as opened:
        yield opened


@pytest.fixture
def history_store(store_url: str) -> Iterator[Store]:
    with open_store(store_url, keep_history=True) as opened:
        yield opened
