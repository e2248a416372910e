"""Runtime fixtures: an inbox URL per backend, manifests for small test agents."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from runtime_helpers import agent_python

from clrk.manifest import TaskAgent, load_manifest


@pytest.fixture
def db_url(backend_url: str) -> str:
    """A URL of an empty database of each backend (see ``backend_url``)."""
    return backend_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runtime.db'}"


@pytest.fixture(autouse=True)
def _clrk_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the data dir (spec.state mounts) inside the test's temp dir."""
    home = tmp_path / "clrk-home"
    monkeypatch.setenv("CLRK_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def _open_tmp_path(tmp_path: Path) -> Path:
    """Let the sandbox's unprivileged user traverse the test's temp dir (pytest makes 0700)."""
    for path in [tmp_path, *tmp_path.parents]:
        if path == Path("/"):
            break
        if not path.stat().st_mode & 0o001:
            path.chmod(path.stat().st_mode | 0o005)
    return tmp_path


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    """A folder of agent scripts, readable by the sandbox's unprivileged user."""
    folder = tmp_path / "agents"
    folder.mkdir()
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
