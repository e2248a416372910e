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
