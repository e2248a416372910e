"""Helpers shared by the runtime tests (importable, unlike conftest)."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

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
