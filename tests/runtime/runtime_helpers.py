"""Helpers shared by the runtime tests (importable, unlike conftest)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn

from clrk.errors import SandboxError
from clrk.runtime import _mounts
from clrk.runtime.sandbox import NOBODY


def agent_python() -> str:
    """The interpreter for test agents: clrk's own when the sandbox user can reach it
    (CI makes it reachable), else the system one, so bubblewrap runs are still exercised.
    """
    if shutil.which("bwrap") is None or os.geteuid() != 0:
        return sys.executable
    try:
        _mounts.check_reachable([sys.executable, sys.prefix, sys.base_prefix], NOBODY, NOBODY)
    except SandboxError:
        system = shutil.which("python3", path="/usr/bin:/bin")
        if system is None:
            pytest.skip("no interpreter reachable by the sandbox user")
        return system
    return sys.executable


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
    """Poll until ``predicate()`` is truthy; fail with ``what`` (no timing assertions)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)
