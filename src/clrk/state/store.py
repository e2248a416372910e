"""The turn protocol, written once over a connector, and the sync ``Store``.

A turn is two statements on the happy path:

1. ``turn_load`` -- one upsert that refuses already-consumed event ids, takes the key's lease
   (a fresh owner token; the fence grows, or is raised to the dispatcher's), and returns the
   state with its version.
2. ``turn_commit`` -- one conditional update (plus, on Postgres, the consumed ids, outbox
   entries and history row as CTEs of the same statement) that succeeds only if version,
   fence and lease are still this turn's. On SQLite the inserts follow in one
   ``BEGIN IMMEDIATE`` transaction; a dialect's SQL file says which, by defining
   ``turn_commit_*`` statements or not.

Anything else (explaining a refusal, releasing a lease after an exception) runs only on the
unhappy path. The functions below take a connector and the query dict, so ``AsyncStore``
reuses them unchanged.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Any, Self

from clrk.errors import Conflict, StoreError
from clrk.state import _rows
from clrk.state._rows import NO_LIMIT, OutboxEntry, Snapshot, Turn
from clrk.state.connector import Connector, open_connector
from clrk.state.migrate import run_migrations
from clrk.state.queries import load_queries
from clrk.state.values import text_problem

COMPONENT = "state"
DEFAULT_LEASE_SECONDS = 30.0
# Statements that follow turn_commit in one transaction on dialects without DML in CTEs,
# with the turn field that makes each one necessary.
_COMMIT_FOLLOWUPS = (
    ("turn_commit_consumed", "consumes"),
    ("turn_commit_outbox", "outbox_rows"),
    ("turn_commit_history", None),
)


def begin_turn(
    db: Connector,
    queries: dict[str, str],
    key: str,
    consumes: Iterable[str] = (),
    fence: int | None = None,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> Turn:
    """Take the key's lease and load its state; refuse consumed ids or a stale fence."""
    ids = _rows.check_turn_args(key, consumes, fence, lease_seconds)
    owner = uuid.uuid4().hex
    params = _rows.load_params(key, ids, fence, lease_seconds, owner)
    row = db.fetch_one(queries["turn_load"], params)
    if row is None:
        consumed = [r["event_id"] for r in db.fetch_all(queries["turn_consumed"], params)]
        current = db.fetch_one(queries["state_get"], {"key": key})
        raise _rows.load_refusal(key, fence, consumed, current)
    return _rows.new_turn(row, key, ids, fence, lease_seconds, owner)


def commit_turn(db: Connector, queries: dict[str, str], turn: Turn, keep_history: bool) -> int:
    """Commit atomically or raise ``Conflict`` having changed nothing; return the new version."""
    params = _rows.commit_params(turn, keep_history)  # SerializationError before any I/O
    followups = [
        queries[name]
        for name, needed in _COMMIT_FOLLOWUPS
        if name in queries and (getattr(turn, needed) if needed else keep_history)
    ]
    if followups:
        with db.transaction():
            row = db.fetch_one(queries["turn_commit"], params)
            if row is not None:
                for sql in followups:
                    db.execute(sql, params)
    else:
        row = db.fetch_one(queries["turn_commit"], params)
    if row is None:
        raise _rows.commit_refusal(turn, db.fetch_one(queries["state_get"], {"key": turn.key}))
    turn.version = int(row["version"])
    return turn.version


def abandon_turn(db: Connector, queries: dict[str, str], turn: Turn, exc: BaseException) -> None:
    """Give the lease back after a turn that will not commit, so the next need not wait.

    Best effort: when this fails too, the lease simply expires; the caller re-raises ``exc``.
    """
    if isinstance(exc, Conflict):  # the lease is not ours any more
        return
    with suppress(StoreError):
        db.execute(queries["turn_release"], {"key": turn.key, "owner": turn.owner})


def get_state(db: Connector, queries: dict[str, str], key: str) -> Snapshot | None:
    _rows.check_key(key)
    row = db.fetch_one(queries["state_get"], {"key": key})
    return _rows.snapshot(row) if row is not None and row["version"] > 0 else None


def list_keys(
    db: Connector, queries: dict[str, str], prefix: str = "", limit: int | None = None
) -> list[str]:
    _rows.check_key(prefix, prefix=True)
    _rows.check_limit(limit)
    params = {"prefix": prefix, "limit": NO_LIMIT if limit is None else limit}
    return [row["key"] for row in db.fetch_all(queries["state_keys"], params)]


def read_history(db: Connector, queries: dict[str, str], key: str) -> list[Snapshot]:
    """Kept versions (``keep_history``), always ending with the current one."""
    _rows.check_key(key)
    with db.transaction():  # one consistent view of history and current state
        kept = [_rows.snapshot(r) for r in db.fetch_all(queries["state_history"], {"key": key})]
        current = get_state(db, queries, key)
    if current is not None and (not kept or kept[-1].version != current.version):
        kept.append(current)
    return kept


def delete_thread(db: Connector, queries: dict[str, str], key: str) -> bool:
    """Delete everything under ``key`` in every table; return whether it had a state."""
    _rows.check_key(key)
    with db.transaction():
        existed = db.execute(queries["thread_delete_state"], {"key": key}) > 0
        for name in ("thread_delete_consumed", "thread_delete_outbox", "thread_delete_history"):
            db.execute(queries[name], {"key": key})
    return existed


def pending_outbox(
    db: Connector,
    queries: dict[str, str],
    limit: int,
    claim_seconds: float | None,
    key: str | None = None,
) -> list[OutboxEntry]:
    _rows.check_limit(limit)
    if key is not None:
        _rows.check_key(key)
    if claim_seconds is not None:
        if not 0 < claim_seconds < float("inf"):
            raise ValueError(f"claim_seconds must be a positive number, got {claim_seconds!r}")
        params = {"limit": limit, "claim_seconds": float(claim_seconds), "key": key}
        rows = db.fetch_all(queries["outbox_claim"], params)
    elif key is not None:
        rows = db.fetch_all(queries["outbox_pending_for_key"], {"limit": limit, "key": key})
    else:
        rows = db.fetch_all(queries["outbox_pending"], {"limit": limit})
    return sorted((_rows.outbox_entry(row) for row in rows), key=_rows.outbox_order)


def mark_sent(db: Connector, queries: dict[str, str], entry_id: str) -> bool:
    if text_problem(entry_id) is not None:
        return False  # no entry has such an id
    return db.execute(queries["outbox_mark_sent"], {"id": entry_id}) > 0


def release_claim(
    db: Connector, queries: dict[str, str], entry_id: str, after_seconds: float = 0.0
) -> bool:
    if text_problem(entry_id) is not None:
        return False
    if not 0 <= after_seconds < float("inf"):
        raise ValueError(f"after_seconds must be a number >= 0, got {after_seconds!r}")
    params = {"id": entry_id, "after": float(after_seconds)}
    return db.execute(queries["outbox_release"], params) > 0


def mark_failed(db: Connector, queries: dict[str, str], entry_id: str, reason: str) -> bool:
    if text_problem(entry_id) is not None:
        return False
    # A reason is free text from elsewhere: keep it storable on every backend.
    storable = (reason or "failed").replace("\x00", "\\0").encode("utf-8", "backslashreplace")
    params = {"id": entry_id, "failure": storable.decode("utf-8")}
    return db.execute(queries["outbox_mark_failed"], params) > 0


class Store:
    """Turns, outbox and thread operations on one database. Thread safe.

    Open with :func:`clrk.state.open_store`; or wrap a connector yourself (after
    ``run_migrations(connector, "clrk.state", "state")``).
    """

    def __init__(self, connector: Connector, *, keep_history: bool = False) -> None:
        self.connector = connector
        self.keep_history = keep_history
        self.queries = load_queries("clrk.state", connector.dialect)

    @contextmanager
    def turn(
        self,
        key: str,
        consumes: Iterable[str] = (),
        fence: int | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> Iterator[Turn]:
        """Run one turn on ``key``; leaving the block commits it.

        Raises ``AlreadyConsumed`` on entry when an id in ``consumes`` was consumed before;
        ``Conflict`` on entry (lease held, lower fence) or on exit (version, fence or lease
        moved on -- nothing was changed); ``SerializationError`` on exit for a state that
        cannot be stored. An exception inside the block releases the lease, commits nothing.
        """
        turn = begin_turn(self.connector, self.queries, key, consumes, fence, lease_seconds)
        try:
            yield turn
            commit_turn(self.connector, self.queries, turn, self.keep_history)
        except BaseException as exc:
            abandon_turn(self.connector, self.queries, turn, exc)
            raise

    def get(self, key: str) -> Snapshot | None:
        """The current committed state of ``key``, without taking its lease."""
        return get_state(self.connector, self.queries, key)

    def keys(self, prefix: str = "", limit: int | None = None) -> list[str]:
        """Keys that have a committed state, sorted."""
        return list_keys(self.connector, self.queries, prefix, limit)

    def history(self, key: str) -> list[Snapshot]:
        return read_history(self.connector, self.queries, key)

    def delete(self, key: str) -> bool:
        return delete_thread(self.connector, self.queries, key)

    def pending_outbox(
        self, limit: int = 100, claim_seconds: float | None = None, key: str | None = None
    ) -> list[OutboxEntry]:
        """Committed, unsent outbox entries, oldest first (only ``key``'s, when given).

        With ``claim_seconds``, only entries nobody holds are returned, each claimed for that
        long, so concurrent deliverers do not get it at the same time; if it is not marked
        sent by then (the deliverer died), a later call returns it again. A deliverer must
        not send after its claim ran out: another may have taken the entry.
        """
        return pending_outbox(self.connector, self.queries, limit, claim_seconds, key)

    def mark_sent(self, entry_id: str) -> bool:
        """Record a delivery; ``False`` if the entry was already marked or does not exist."""
        return mark_sent(self.connector, self.queries, entry_id)

    def release_claim(self, entry_id: str, after_seconds: float = 0.0) -> bool:
        """Hand a claimed entry back, for a deliverer that gives up for now (a rate limit
        longer than its claim): deliverable again in ``after_seconds`` (the receiver's
        Retry-After; 0, at once) instead of when the claim would have run out."""
        return release_claim(self.connector, self.queries, entry_id, after_seconds)

    def mark_failed(self, entry_id: str, reason: str) -> bool:
        """Give up an entry the receiver refused for good; it is no longer pending.

        For a permanent refusal only (a channel that does not exist, revoked credentials):
        left pending, such an entry would be retried by every later deliverer forever.
        ``False`` if the entry was already settled or does not exist.
        """
        return mark_failed(self.connector, self.queries, entry_id, reason)

    def close(self) -> None:
        self.connector.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_store(url: str, *, keep_history: bool = False, **options: Any) -> Store:
    """Open the store at ``url`` and bring its schema up to date (once, under a lock)."""
    connector = open_connector(url, **options)
    try:
        run_migrations(connector, "clrk.state", COMPONENT)
    except BaseException:
        connector.close()
        raise
    return Store(connector, keep_history=keep_history)
