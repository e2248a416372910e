"""Named SQL queries, one file per dialect, loaded once.

A package keeps its SQL in ``<package>/sql/<dialect>.sql``; each query starts with a
``-- name: query_name`` line, may be followed by comment lines saying what it is for, and
runs until the next header. Keeping SQL out of Python means one reads a dialect's whole data
access in one file, and a test can check that both dialects define the same names.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from clrk.errors import ConfigError

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*$", re.MULTILINE)


def parse_queries(text: str, source: str = "<sql>") -> dict[str, str]:
    """Split ``text`` at ``-- name:`` headers; duplicate or empty queries are errors."""
    queries: dict[str, str] = {}
    headers = list(_HEADER.finditer(text))
    for index, header in enumerate(headers):
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        name = header.group("name")
        body = text[header.end() : end].strip()
        if name in queries:
            raise ConfigError(f"{source}: query {name!r} defined twice")
        if not body or all(line.lstrip().startswith("--") for line in body.splitlines()):
            raise ConfigError(f"{source}: query {name!r} is empty")
        queries[name] = body
    return queries


@cache
def load_queries(package: str, dialect: str) -> dict[str, str]:
    """Return ``{name: sql}`` from ``<package>/sql/<dialect>.sql`` (cached per process).

    The returned dict is shared; treat it as read-only.
    """
    resource = resources.files(package) / "sql" / f"{dialect}.sql"
    if not resource.is_file():
        raise ConfigError(f"no SQL for dialect {dialect!r} in {package} ({resource})")
    return parse_queries(resource.read_text(encoding="utf-8"), f"{package}/sql/{dialect}.sql")
