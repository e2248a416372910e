"""``AsyncStore``: the same store for asyncio code.

Each database call runs the sync turn functions of ``store.py`` in a worker thread
(``asyncio.to_thread``), so the protocol exists once. For SQLite that is the only option
(``sqlite3`` blocks); for Postgres it costs a thread hop per statement, small next to the
round trip, and keeps one connection pool for sync and async callers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

from clrk.errors import StoreError
from clrk.state import store as _store
from clrk.state._rows import OutboxEntry, Snapshot, Turn
from clrk.state.store import DEFAULT_LEASE_SECONDS, Store, open_store


class AsyncStore:
    """Async twin of :class:`~clrk.state.Store`; open it with ``async with``.

    ::

        async with open_async_store(url) as store:
            async with store.turn(key, consumes=[event_id]) as turn:
                turn.state = {...}
    """

    def __init__(self, url: str, *, keep_history: bool = False, **options: Any) -> None:
        self.url = url
        self._keep_history = keep_history
        self._options = options
        self._store: Store | None = None

    async def open(self) -> Self:
        """Connect and migrate (in a thread). Idempotent."""
        if self._store is None:
            self._store = await asyncio.to_thread(
                open_store, self.url, keep_history=self._keep_history, **self._options
            )
        return self

    @property
    def store(self) -> Store:
        """The sync store underneath (for code that runs in a thread anyway)."""
        if self._store is None:
            raise StoreError("AsyncStore is not open: use 'async with' or 'await store.open()'")
        return self._store

    @asynccontextmanager
    async def turn(
        self,
        key: str,
        consumes: Iterable[str] = (),
        fence: int | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> AsyncIterator[Turn]:
        """As :meth:`Store.turn`; the block's own code runs on the event loop."""
        store = self.store
        db, queries = store.connector, store.queries
        consumes = list(consumes)
        turn = await asyncio.to_thread(
            _store.begin_turn, db, queries, key, consumes, fence, lease_seconds
        )
        try:
            yield turn
            await asyncio.to_thread(_store.commit_turn, db, queries, turn, store.keep_history)
        except BaseException as exc:
            await asyncio.to_thread(_store.abandon_turn, db, queries, turn, exc)
            raise

    async def get(self, key: str) -> Snapshot | None:
        return await asyncio.to_thread(self.store.get, key)

    async def keys(self, prefix: str = "", limit: int | None = None) -> list[str]:
        return await asyncio.to_thread(self.store.keys, prefix, limit)

    async def history(self, key: str) -> list[Snapshot]:
        return await asyncio.to_thread(self.store.history, key)

    async def delete(self, key: str) -> bool:
        return await asyncio.to_thread(self.store.delete, key)

    async def pending_outbox(
        self, limit: int = 100, claim_seconds: float | None = None, key: str | None = None
    ) -> list[OutboxEntry]:
        return await asyncio.to_thread(self.store.pending_outbox, limit, claim_seconds, key)

    async def mark_sent(self, entry_id: str) -> bool:
        return await asyncio.to_thread(self.store.mark_sent, entry_id)

    async def release_claim(self, entry_id: str, after_seconds: float = 0.0) -> bool:
        return await asyncio.to_thread(self.store.release_claim, entry_id, after_seconds)

    async def mark_failed(self, entry_id: str, reason: str) -> bool:
        return await asyncio.to_thread(self.store.mark_failed, entry_id, reason)

    async def aclose(self) -> None:
        if self._store is not None:
            store, self._store = self._store, None
            await asyncio.to_thread(store.close)

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def open_async_store(url: str, *, keep_history: bool = False, **options: Any) -> AsyncStore:
    """An :class:`AsyncStore` for ``url``; it connects on ``async with`` (or ``await .open()``)."""
    return AsyncStore(url, keep_history=keep_history, **options)
