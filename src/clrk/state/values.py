"""What a state can be, and how it becomes bytes.

A state is either a JSON-compatible document (dict, list, str, int, float, bool, None,
nested) or opaque ``bytes`` as a whole. Both are stored as bytes with a ``kind`` beside
them, so every backend stores the same thing.

Encoding takes the fast path (``json.dumps`` in C) and only when that fails walks the value
to say *where* the problem is (``$.messages[3].content``): the walk costs nothing on the
common path, and a bare "Object of type X is not JSON serializable" says nothing about which
of a thousand messages holds it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from clrk.errors import SerializationError

KIND_NONE = "none"
KIND_JSON = "json"
KIND_BYTES = "bytes"

_JSON_KEY_TYPES = (str, int, float, bool, type(None))
# Keys (thread keys, partition keys) stay short enough for any backend's index (Postgres:
# 2704 bytes an entry; 512 characters are at most 2048 bytes of UTF-8).
MAX_KEY_LENGTH = 512


def encode_value(value: Any, root: str = "$") -> tuple[str, bytes | None]:
    """Return ``(kind, data)`` for a state value; ``SerializationError`` names the bad path."""
    if value is None:
        return KIND_NONE, None
    if isinstance(value, bytes | bytearray | memoryview):
        return KIND_BYTES, bytes(value)
    return KIND_JSON, dump_json_bytes(value, root)


def dump_json_bytes(value: Any, root: str = "$") -> bytes:
    """:func:`dump_json` as UTF-8, which every backend stores alike."""
    text = dump_json(value, root)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800") that json let through
        raise _located(value, root, exc) from exc


def decode_value(kind: str, data: bytes | memoryview | None) -> Any:
    """Inverse of :func:`encode_value`."""
    if kind == KIND_NONE or data is None:
        return None
    if kind == KIND_BYTES:
        return bytes(data)
    return json.loads(bytes(data))


def dump_json(value: Any, root: str = "$") -> str:
    """Compact JSON text of ``value``; ``SerializationError`` with the path on failure."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise _located(value, root, exc) from exc


def _located(value: Any, root: str, exc: Exception) -> SerializationError:
    """The error for ``exc``, at the first place in ``value`` that causes it."""
    try:
        found = find_unserializable(value, root)
    except RecursionError:
        found = (root, "nested too deeply to store")
    path, reason = found if found is not None else (root, str(exc))
    return SerializationError(path, reason)


def find_unserializable(value: Any, path: str = "$") -> tuple[str, str] | None:
    """The first ``(path, reason)`` that JSON cannot represent, or ``None``."""
    return _walk(value, path, set())


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as UTF-8 text on every backend, or ``None``."""
    if "\x00" in text:
        return "text with a NUL character (Postgres text cannot hold one)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"text that is not valid Unicode ({exc.reason} {text[exc.start]!r})"
    return None


def _walk(value: Any, path: str, parents: set[int]) -> tuple[str, str] | None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return None
        except UnicodeEncodeError as exc:
            return path, f"text that is not valid Unicode ({exc.reason} {value[exc.start]!r})"
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, f"{value!r} is not a JSON number")
    if isinstance(value, bytes | bytearray | memoryview):
        return path, "bytes inside a JSON document (store bytes as the whole state, or base64)"
    if isinstance(value, dict | list | tuple):
        if id(value) in parents:
            return path, "circular reference"
        parents.add(id(value))
        try:
            if isinstance(value, dict):
                for key, item in value.items():
                    if not isinstance(key, _JSON_KEY_TYPES):
                        return f"{path}[{key!r}]", f"key of type {type(key).__name__}"
                    if isinstance(key, str) and _walk(key, path, parents) is not None:
                        return f"{path}[{key!r}]", "key that is not valid Unicode"
                    found = _walk(item, _child(path, key), parents)
                    if found is not None:
                        return found
            else:
                for index, item in enumerate(value):
                    found = _walk(item, f"{path}[{index}]", parents)
                    if found is not None:
                        return found
        finally:
            parents.discard(id(value))
        return None
    return path, f"{type(value).__name__} is not JSON-serializable"


def _child(path: str, key: Any) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}"
    shown = json.dumps(key, ensure_ascii=False) if isinstance(key, str) else repr(key)
    return f"{path}[{shown}]"
