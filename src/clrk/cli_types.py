"""``argparse`` types for the values clrk's commands take: checked once, where they are parsed.

A negative lease or poll interval makes the dispatcher spin, a port past 65535 ends in a
traceback deep inside the server, a missing manifest in a ``FileNotFoundError``: each is
rejected here instead, as argparse's usual one line naming the argument
(``clrk dispatcher: error: argument --lease-seconds: must be > 0, got -5``). Every package
that defines commands uses these, so the same mistake gets the same message everywhere.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

__all__ = ["existing_file", "non_negative_int", "port", "positive_float", "positive_int"]


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        # float("nan") and float("inf") parse, but no timeout or interval means them.
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (``--limit``: 0 or -1 used to show one row without a word)."""
    value = int(_number(text, int))
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (a count where none is meaningful, e.g. ``--nice 0``)."""
    value = int(_number(text, int))
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    """A finite number of seconds > 0: zero or less turns a wait loop into a busy loop."""
    value = float(_number(text, float))
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def port(text: str) -> int:
    """A TCP port to listen on, 1-65535 (larger ones overflow inside the socket layer)."""
    value = int(_number(text, int))
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port between 1 and 65535, got {text}")
    return value


def existing_file(text: str) -> Path:
    """A path to a readable regular file, so a typo fails here and not in a traceback."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if not path.is_file():
        reason = "is not a regular file" if path.exists() else "no such file"
        raise argparse.ArgumentTypeError(f"{text}: {reason}")
    return path
