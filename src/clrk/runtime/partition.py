"""Partition keys: a manifest's JMESPath expression evaluated over the envelope.

The key decides which events are serialized against each other (one turn per key at a
time), so it must be a stable string. Numbers that are integers are accepted and turned
into text; floats are refused, since Slack timestamps read as floats lose digits and would
merge or split threads silently.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jmespath
import jmespath.exceptions
from jmespath.parser import ParsedResult

from clrk.errors import BadRequest
from clrk.state.values import MAX_KEY_LENGTH, text_problem


@lru_cache(maxsize=256)
def _compiled(expression: str) -> ParsedResult:
    return jmespath.compile(expression)


def partition_key(expression: str, envelope: dict[str, Any]) -> str:
    """Evaluate ``expression`` over the structured envelope; ``BadRequest`` saying why not."""
    try:
        value = _compiled(expression).search(envelope)
    except jmespath.exceptions.JMESPathError as exc:
        first_line = str(exc).splitlines()[0]
        raise BadRequest(f"partition key {expression!r} failed: {first_line}") from exc
    if isinstance(value, bool) or value is None:
        raise BadRequest(f"partition key {expression!r} yielded {value!r} for this event")
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        kind = type(value).__name__
        raise BadRequest(f"partition key {expression!r} yielded a {kind}, not a string")
    if not value:
        raise BadRequest(f"partition key {expression!r} yielded an empty string")
    if len(value) > MAX_KEY_LENGTH:
        raise BadRequest(f"partition key longer than {MAX_KEY_LENGTH} characters")
    problem = text_problem(value)
    if problem is not None:  # no store could keep it: refuse it now, not in the dispatcher
        raise BadRequest(f"partition key {value!r} holds {problem}")
    return value
