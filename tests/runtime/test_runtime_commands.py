"""The runtime commands as a user runs them: a subprocess per command, one database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import clrk.runtime as runtime
from clrk.manifest import load_manifest

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


SLACK_EXAMPLE = EXAMPLE.parents[1] / "slack-thread" / "agent.yaml"


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The error line of a failed command: argparse's, or clrk's own, never a traceback."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_every_manifest_problem_is_one_line(sqlite_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (
        EXAMPLE.read_text()
        .replace("onBusy: enqueue", "onBusy: drop")
        .replace("maxConcurrent: 2", "maxConcurrent: true")
    )
    bad.write_text(text + "  network: nope\n")
    assert "onBusy: drop" in bad.read_text()
    result = clrk("apply", "-f", str(bad), db=sqlite_url)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("error: invalid manifest: spec.") for line in lines), lines
    assert [line.split(": ")[2] for line in lines] == [
        "spec.maxConcurrent",
        "spec.onBusy",
        "spec.network",
    ]


def test_missing_working_dir_is_refused_at_apply(sqlite_url: str, tmp_path: Path) -> None:
    bad = tmp_path / "agent.yaml"
    bad.write_text(EXAMPLE.read_text().replace("workingDir: .", "workingDir: ./missing"))
    line = one_error_line(clrk("apply", "-f", str(bad), db=sqlite_url))
    assert f"spec.template.spec.workingDir: directory {tmp_path / 'missing'} does not" in line
    assert "echo" not in clrk("agents", db=sqlite_url).stdout


def test_apply_names_a_directory_or_missing_file(sqlite_url: str, tmp_path: Path) -> None:
    line = one_error_line(clrk("apply", "-f", str(tmp_path), db=sqlite_url))
    assert "-f/--filename" in line and "is a directory, not a file" in line
    line = one_error_line(clrk("apply", "-f", str(tmp_path / "nope"), db=sqlite_url))
    assert "-f/--filename" in line and "no such file" in line


@pytest.mark.parametrize(
    ("args", "argument", "reason"),
    [
        (["dispatcher", "--lease-seconds", "-5"], "--lease-seconds", "must be > 0"),
        (["dispatcher", "--lease-seconds", "0"], "--lease-seconds", "must be > 0"),
        (["dispatcher", "--poll-interval", "0"], "--poll-interval", "must be > 0"),
        (["dispatcher", "--poll-interval", "nan"], "--poll-interval", "must be a finite number"),
        (["dispatcher", "--nice", "-1"], "--nice", "must be >= 0"),
        (["invocations", "--limit", "0"], "--limit", "must be >= 1"),
        (["invocations", "--limit", "-1"], "--limit", "must be >= 1"),
        (["invocations", "--limit", "ten"], "--limit", "must be an integer"),
        (["ingress", "--port", "99999"], "--port", "must be a port between 1 and 65535"),
        (["ingress", "--port", "0"], "--port", "must be a port between 1 and 65535"),
    ],
)
def test_out_of_range_numbers_are_refused_by_name(
    sqlite_url: str, args: list[str], argument: str, reason: str
) -> None:
    line = one_error_line(clrk(*args, db=sqlite_url))
    assert f"argument {argument}: {reason}" in line


def test_agents_table_has_one_line_per_agent(sqlite_url: str) -> None:
    assert "\n" in load_manifest(SLACK_EXAMPLE).spec.partition_key  # the folded YAML value
    assert clrk("apply", "-f", str(SLACK_EXAMPLE), db=sqlite_url).returncode == 0
    lines = clrk("agents", db=sqlite_url).stdout.splitlines()
    assert len(lines) == 2, lines
    assert lines[1].startswith("slack-thread-agent ")
    assert "join(':', [data.team_id, data" in lines[1]
    assert max(len(line) for line in lines) < 200


def test_delete_counts_in_words(sqlite_url: str) -> None:
    assert clrk("apply", "-f", str(EXAMPLE), db=sqlite_url).returncode == 0
    from clrk.runtime.inbox import Inbox

    with Inbox.open(sqlite_url) as inbox:
        agent = inbox.agent("echo")
        inbox.enqueue(agent, event_id="e1", partition_key="t1", envelope='{"id": "e1"}')
    deleted = clrk("delete", "echo", db=sqlite_url)
    assert "taskagent/echo deleted (1 waiting event dead-lettered)" in deleted.stdout


def test_home_finds_the_runtime_of_a_stack_started_with_home(tmp_path: Path) -> None:
    """`clrk up --home X` keeps its runtime in X; `clrk agents --home X` must look there."""
    home = tmp_path / "stack"
    assert clrk("apply", "-f", str(EXAMPLE), db=f"sqlite:///{home / 'runtime.db'}").returncode == 0
    result = subprocess.run(
        [sys.executable, "-m", "clrk", "agents", "--home", str(home)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0 and "echo" in result.stdout
