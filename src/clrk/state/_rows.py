"""Rows to models, turn parameters, and why a turn was refused. No I/O here.

Kept apart from ``store.py`` so that the sync and the async store share every decision and
only differ in how they wait for the database.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from clrk.errors import AlreadyConsumed, Conflict
from clrk.state.values import (
    MAX_KEY_LENGTH,
    decode_value,
    dump_json_bytes,
    encode_value,
    text_problem,
)

# "No limit" for queries with a :limit parameter (SQLite and Postgres disagree on NULL/-1).
NO_LIMIT = 2**62
# Fences are stored as 64-bit integers.
MAX_FENCE = 2**63 - 1


@dataclass(frozen=True)
class Snapshot:
    """One committed version of a key's state."""

    key: str
    version: int
    state: Any
    fence: int
    committed_at: float


@dataclass(frozen=True)
class OutboxEntry:
    """A side effect recorded by a committed turn. ``id`` is stable across redeliveries."""

    id: str
    key: str
    version: int
    seq: int
    payload: Any
    created_at: float
    attempts: int


@dataclass
class Turn:
    """A turn in progress: read ``state``/``version``/``fence``, set ``state``, add outbox.

    Obtained from ``Store.turn()``; leaving that block commits it.
    """

    key: str
    version: int
    fence: int
    state: Any
    consumes: tuple[str, ...]
    lease_seconds: float
    external_fence: bool
    owner: str = field(repr=False)
    outbox_rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def add_outbox(self, payload: Any) -> str:
        """Record a side effect to deliver after the commit; returns its stable id.

        ``payload`` must be JSON-compatible (checked now, so the error points here).
        """
        seq = len(self.outbox_rows)
        text = dump_json_bytes(payload, f"outbox[{seq}]").decode("utf-8")
        entry_id = uuid.uuid4().hex
        self.outbox_rows.append({"id": entry_id, "seq": seq, "payload": text})
        return entry_id

    @property
    def outbox_ids(self) -> list[str]:
        """Ids of the entries added so far, in order."""
        return [entry["id"] for entry in self.outbox_rows]


def load_params(
    key: str, consumes: tuple[str, ...], fence: int | None, lease_seconds: float, owner: str
) -> dict[str, Any]:
    return {
        "key": key,
        "consumes": json.dumps(list(consumes)),
        "fence": fence,
        "lease_seconds": float(lease_seconds),
        "owner": owner,
    }


def check_key(key: Any, *, prefix: bool = False) -> str:
    """A key (or key prefix) every backend can store and index alike, else ``ValueError``.

    Checked before any I/O so that SQLite and Postgres give the same answer: Postgres text
    holds no NUL, and its index entries have a size limit that long keys would pass.
    """
    if not isinstance(key, str) or (not key and not prefix):
        raise ValueError(f"key must be a non-empty string, got {key!r}")
    problem = text_problem(key) or (
        f"more than {MAX_KEY_LENGTH} characters" if len(key) > MAX_KEY_LENGTH else None
    )
    if problem is not None:
        raise ValueError(f"key {key[:80]!r} holds {problem}")
    return key


def check_limit(limit: Any) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")


def check_turn_args(
    key: str, consumes: Any, fence: int | None, lease_seconds: float
) -> tuple[str, ...]:
    """Validate ``turn()`` arguments; return the consumed ids, de-duplicated, in order."""
    check_key(key)
    if isinstance(consumes, str):
        raise ValueError("consumes must be a list of event ids, not a single string")
    ids = tuple(dict.fromkeys(consumes))
    if not all(
        isinstance(event_id, str) and event_id and text_problem(event_id) is None
        for event_id in ids
    ):
        raise ValueError(f"consumes must hold non-empty UTF-8 strings, got {list(ids)!r}")
    if fence is not None and (
        isinstance(fence, bool) or not isinstance(fence, int) or not 0 <= fence <= MAX_FENCE
    ):
        raise ValueError(f"fence must be an int from 0 to 2**63 - 1 or None, got {fence!r}")
    if not lease_seconds > 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds!r}")
    return ids


def new_turn(
    row: dict[str, Any],
    key: str,
    consumes: tuple[str, ...],
    fence: int | None,
    lease_seconds: float,
    owner: str,
) -> Turn:
    return Turn(
        key=key,
        version=int(row["version"]),
        fence=int(row["fence"]),
        state=decode_value(row["kind"], row["value"]),
        consumes=consumes,
        lease_seconds=lease_seconds,
        external_fence=fence is not None,
        owner=owner,
    )


def commit_params(turn: Turn, keep_history: bool) -> dict[str, Any]:
    """Encode the turn for ``turn_commit``; raises ``SerializationError`` before any I/O."""
    kind, value = encode_value(turn.state)
    return {
        "key": turn.key,
        "version": turn.version,
        "fence": turn.fence,
        "owner": turn.owner,
        "check_expiry": not turn.external_fence,
        "kind": kind,
        "value": value,
        "consumes": json.dumps(list(turn.consumes)),
        "outbox": json.dumps(turn.outbox_rows),
        "keep_history": keep_history,
    }


def load_refusal(
    key: str,
    fence: int | None,
    consumed: list[str],
    row: dict[str, Any] | None,
) -> AlreadyConsumed | Conflict:
    """The error for a ``turn_load`` that returned no row."""
    if consumed:
        return AlreadyConsumed(key, consumed)
    if row is None:  # deleted between the two queries
        return Conflict(key, "version", None, None)
    if fence is not None and fence < row["fence"]:
        return Conflict(key, "fence", fence, row["fence"])
    return Conflict(key, "lease", "free", f"held until {_when(row['lease_expires_at'])}")


def commit_refusal(turn: Turn, row: dict[str, Any] | None) -> Conflict:
    """The error for a ``turn_commit`` that changed nothing."""
    if row is None:
        return Conflict(turn.key, "version", turn.version, None)
    if row["fence"] != turn.fence:
        return Conflict(turn.key, "fence", turn.fence, row["fence"])
    if row["version"] != turn.version:
        return Conflict(turn.key, "version", turn.version, row["version"])
    if row["lease_owner"] != turn.owner:
        return Conflict(turn.key, "lease", turn.owner, row["lease_owner"])
    return Conflict(turn.key, "lease", "unexpired", f"expired at {_when(row['lease_expires_at'])}")


def snapshot(row: dict[str, Any]) -> Snapshot:
    return Snapshot(
        key=row["key"],
        version=int(row["version"]),
        state=decode_value(row["kind"], row["value"]),
        fence=int(row["fence"]),
        committed_at=float(row["updated_at"]),
    )


def outbox_entry(row: dict[str, Any]) -> OutboxEntry:
    return OutboxEntry(
        id=row["id"],
        key=row["key"],
        version=int(row["version"]),
        seq=int(row["seq"]),
        payload=json.loads(bytes(row["payload"])),
        created_at=float(row["created_at"]),
        attempts=int(row["attempts"]),
    )


def outbox_order(entry: OutboxEntry) -> tuple[float, str, int, int]:
    return (entry.created_at, entry.key, entry.version, entry.seq)


def _when(epoch: float | None) -> str:
    return "-" if epoch is None else f"{epoch:.3f}"
