"""Runtime fixtures: an inbox URL per backend, manifests for small test agents."""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from clrk.errors import SandboxError
from clrk.manifest import TaskAgent, load_manifest
from clrk.runtime import _mounts
from clrk.runtime.sandbox import NOBODY

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty runtime database of each backend (Postgres: a fresh database per test)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'runtime.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runtime.db'}"


@pytest.fixture(autouse=True)
def _clrk_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the data dir (spec.state mounts) inside the test's temp dir."""
    home = tmp_path / "clrk-home"
    monkeypatch.setenv("CLRK_HOME", str(home))
    return home


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


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    """A folder of agent scripts, readable by the sandbox's unprivileged user."""
    folder = tmp_path / "agents"
    folder.mkdir()
    for path in [folder, *folder.parents]:
        if path == Path("/"):
            break
        if not os.stat(path).st_mode & 0o001:
            path.chmod(path.stat().st_mode | 0o005)  # pytest's tmp dirs are 0700
    return folder


@pytest.fixture
def make_agent(agents_dir: Path) -> Callable[..., TaskAgent]:
    """Write ``code`` as an agent script and return its validated manifest."""

    def make(name: str, code: str, **spec: object) -> TaskAgent:
        script = agents_dir / f"{name}.py"
        script.write_text(textwrap.dedent(code))
        script.chmod(0o644)
        manifest: dict[str, object] = {
            "apiVersion": "clrk.dev/v1",
            "kind": "TaskAgent",
            "metadata": {"name": name},
            "spec": {
                "template": {
                    "spec": {
                        "command": [agent_python(), str(script)],
                        "env": [{"name": k, "value": v} for k, v in spec.pop("env", {}).items()],  # type: ignore[attr-defined]
                    }
                },
                "partitionKey": "data.thread",
                **spec,
            },
        }
        return load_manifest(manifest)

    return make
