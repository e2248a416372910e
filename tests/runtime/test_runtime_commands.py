"""The runtime commands as a user runs them: a subprocess per command, one database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import clrk.runtime as runtime

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "echo" / "agent.yaml"


def clrk(*args: str, db: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clrk.runtime.commands", *args, "--db", db],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_apply_list_run_inspect_delete(sqlite_url: str, tmp_path: Path) -> None:
    applied = clrk("apply", "-f", str(EXAMPLE), db=sqlite_url)
    assert applied.returncode == 0 and "taskagent/echo applied" in applied.stdout
    assert clrk("apply", "-f", str(EXAMPLE), db=sqlite_url).returncode == 0  # replaces
    listed = clrk("agents", db=sqlite_url)
    assert listed.stdout.count("\necho ") == 1

    from clrk.runtime.inbox import Inbox

    with Inbox.open(sqlite_url) as inbox:
        agent = inbox.agent("echo")
        inbox.enqueue(agent, event_id="e1", partition_key="t1", envelope='{"id": "e1"}')
    drained = subprocess.run(
        [
            sys.executable,
            "-m",
            "clrk.runtime.commands",
            "dispatcher",
            "--until-idle",
            "--db",
            sqlite_url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={"CLRK_SANDBOX": "subprocess", "PATH": "/usr/bin:/bin", "CLRK_HOME": str(tmp_path)},
    )
    assert drained.returncode == 0, drained.stderr
    table = clrk("invocations", "--agent", "echo", "--limit", "5", db=sqlite_url).stdout
    header, row = table.splitlines()[:2]
    for column in ("STATUS", "TRIES", "DURATION", "EXIT", "STDERR"):
        assert column in header
    assert "succeeded" in row and "t1" in row

    deleted = clrk("delete", "echo", db=sqlite_url)
    assert deleted.returncode == 0
    again = clrk("delete", "echo", db=sqlite_url)
    assert again.returncode == 1 and "no TaskAgent named 'echo'" in again.stderr


def test_invalid_manifest_names_the_field(sqlite_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("maxConcurrent: 2", "maxConcurrent: 0"))
    result = clrk("apply", "-f", str(bad), db=sqlite_url)
    assert result.returncode == 2
    assert "spec.maxConcurrent: must be >= 1" in result.stderr
    assert "Traceback" not in result.stderr
    assert "echo" not in clrk("agents", db=sqlite_url).stdout


def test_exported_members_are_complete() -> None:
    public = {
        name
        for name in vars(runtime)
        if not name.startswith("_")
        and name not in {"annotations"}
        and not isinstance(getattr(runtime, name), type(runtime))
    }
    assert set(runtime.__all__) == public
    assert runtime.__all__ == sorted(runtime.__all__)
