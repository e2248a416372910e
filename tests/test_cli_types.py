"""The shared argparse types, and the top-level commands that use them."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from clrk.cli import build_parser, main
from clrk.cli_types import existing_file, non_negative_int, port, positive_float, positive_int


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (positive_int, "1", 1),
        (non_negative_int, "0", 0),
        (positive_float, "0.05", 0.05),
        (positive_float, "30", 30.0),
        (port, "1", 1),
        (port, "65535", 65535),
    ],
)
def test_good_values_parse(parse: object, text: str, expected: object) -> None:
    assert parse(text) == expected  # type: ignore[operator]


@pytest.mark.parametrize(
    ("parse", "text", "reason"),
    [
        (positive_int, "0", "must be >= 1, got 0"),
        (positive_int, "-1", "must be >= 1, got -1"),
        (positive_int, "1.5", "must be an integer, got '1.5'"),
        (non_negative_int, "-3", "must be >= 0"),
        (positive_float, "-5", "must be > 0, got -5"),
        (positive_float, "0", "must be > 0"),
        (positive_float, "inf", "finite"),
        (positive_float, "soon", "must be a number, got 'soon'"),
        (port, "99999", "between 1 and 65535, got 99999"),
        (port, "0", "between 1 and 65535"),
    ],
)
def test_bad_values_say_why(parse: object, text: str, reason: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as info:
        parse(text)  # type: ignore[operator]
    assert reason in str(info.value)


def test_existing_file(tmp_path: Path) -> None:
    manifest = tmp_path / "agent.yaml"
    manifest.write_text("x")
    assert existing_file(str(manifest)) == manifest
    with pytest.raises(argparse.ArgumentTypeError, match="is a directory, not a file"):
        existing_file(str(tmp_path))
    with pytest.raises(argparse.ArgumentTypeError, match="no such file"):
        existing_file(str(tmp_path / "missing.yaml"))


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1
    return errors[0]


@pytest.mark.parametrize("command", ["up", "demo"])
def test_missing_manifest_is_refused_before_anything_starts(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nonexistent.yaml"
    line = error_of([command, "--home", str(tmp_path), "--manifest", str(missing)], capsys)
    assert f"argument --manifest: {missing}: no such file" in line


def test_say_timeout_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    line = error_of(["slack", "say", "--channel", "C1", "--timeout", "-1", "hi"], capsys)
    assert "argument --timeout: must be > 0" in line


def test_valid_values_reach_the_handlers() -> None:
    args = build_parser().parse_args(["dispatcher", "--lease-seconds", "5", "--nice", "3"])
    assert args.lease_seconds == 5.0 and args.nice == 3
    args = build_parser().parse_args(["invocations", "--limit", "7"])
    assert args.limit == 7


def test_demo_refuses_to_empty_a_folder_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug: `clrk demo --home DIR` deleted DIR and all in it, whatever it held."""
    precious = tmp_path / "mine" / "important.txt"
    precious.parent.mkdir()
    precious.write_text("keep me")
    assert main(["demo", "--home", str(precious.parent)]) == 2
    assert "holds files that clrk demo did not make" in capsys.readouterr().err
    assert precious.read_text() == "keep me"


def test_demo_home_is_emptied_when_new_empty_or_its_own(tmp_path: Path) -> None:
    from clrk.demo import DEMO_MARK, fresh_home

    home = tmp_path / "demo"
    fresh_home(home)  # new
    assert [p.name for p in home.iterdir()] == [DEMO_MARK]
    (home / "runtime.db").write_text("from the last run")
    fresh_home(home)  # an earlier demo's
    assert [p.name for p in home.iterdir()] == [DEMO_MARK]
    (home / DEMO_MARK).unlink()
    for name in ("runtime.db", "applied-agent.yaml", "logs"):
        (home / name).write_text("a demo folder from before the mark existed")
    fresh_home(home)
    assert [p.name for p in home.iterdir()] == [DEMO_MARK]
    link = tmp_path / "link"
    link.symlink_to(home)
    assert fresh_home(link) == home.resolve() and link.is_symlink()


def test_demo_refuses_its_default_folder_with_foreign_files_or_a_live_user(
    tmp_path: Path,
) -> None:
    """Bug: the default folder was emptied whatever it held, and a running demo's or
    stack's folder was emptied under it."""
    import subprocess
    import sys

    from clrk.demo import DEMO_MARK, fresh_home
    from clrk.errors import ClrkError
    from clrk.stack import StackInfo

    home = tmp_path / "demo"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    with pytest.raises(ClrkError, match="did not make"):
        fresh_home(home)
    (home / "notes.txt").unlink()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (home / DEMO_MARK).write_text(f"{other.pid}\n")
        with pytest.raises(ClrkError, match=f"another clrk demo \\(pid {other.pid}\\)"):
            fresh_home(home)
        (home / DEMO_MARK).unlink()
        info = StackInfo(str(home), "e", "p", "i", "r", "a", "t", pid=other.pid)
        info.save()
        with pytest.raises(ClrkError, match="already running"):
            fresh_home(home)
    finally:
        other.kill()
        other.wait()
    assert fresh_home(home) == home  # both users gone: emptied
    assert [p.name for p in home.iterdir()] == [DEMO_MARK]


@pytest.mark.parametrize("command", ["up", "demo"])
def test_a_bad_manifest_stops_the_stack_before_it_starts_with_one_line(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bug: `clrk up --manifest` read the YAML itself: `env: [{name: 1}]` ended in a
    traceback (AttributeError) instead of apply's message naming the field."""
    example = Path(__file__).resolve().parents[1] / "examples" / "slack-thread" / "agent.yaml"
    bad = tmp_path / "agent.yaml"
    bad.write_text(example.read_text().replace("name: CLRK_CHAT_MODEL", "name: 1"))
    assert "name: 1" in bad.read_text()
    home = tmp_path / "home"
    assert main([command, "--home", str(home), "--manifest", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "spec.template.spec.env[0].name" in err and "Traceback" not in err
    assert not (home / "logs").exists(), "nothing was started"


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "clrk", "agents", "--db", f"sqlite:///{tmp_path / 'r.db'}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written (`| head -0`)
    err = proc.stderr.read().decode()
    assert proc.wait(30) == 0 and "Traceback" not in err and "BrokenPipe" not in err


def test_an_unmakeable_home_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "--home", "/proc/clrk-cannot-be-here"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clrk: error:") and len(err.strip().splitlines()) == 1
