"""Shared test support: where the fixtures are, servers a test needs, uvicorn, polling.

Imported by ``conftest.py`` and by test modules (pytest puts ``tests/`` on the path).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get(
    "CLRK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


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


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free port in a thread; yield its base URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 20.0) -> None:
    """Poll until ``predicate()`` is truthy; fail naming ``what`` (no timing assertions)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@contextlib.contextmanager
def emulator_serving(bot_token: str) -> Iterator[str]:
    """The Slack emulator over real HTTP, delivering no events, answering ``bot_token``."""
    from clrk.slack.emulator import create_app

    app = create_app(signing_secret="s" * 32, request_url=None, bot_token=bot_token)
    with serve(app) as url:
        yield url
