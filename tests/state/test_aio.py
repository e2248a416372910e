"""AsyncStore: the same protocol from asyncio code (shares the sync functions)."""

from __future__ import annotations

import asyncio

import pytest

from clrk.errors import AlreadyConsumed, Conflict, StoreError
from clrk.state import AsyncStore, open_async_store


async def test_async_turns_outbox_and_thread_ops(store_url: str) -> None:
    async with open_async_store(store_url, keep_history=True) as store:
        async with store.turn("k", consumes=["e1"]) as turn:
            entry_id = turn.add_outbox({"text": "hi"})
            turn.state = {"n": 1}
        with pytest.raises(AlreadyConsumed):
            async with store.turn("k", consumes=["e1"]):
                pytest.fail("must not start")
        with pytest.raises(RuntimeError):
            async with store.turn("k") as turn:
                turn.state = {"n": 99}
                raise RuntimeError
        assert [e.id for e in await store.pending_outbox()] == [entry_id]
        assert await store.mark_sent(entry_id)
        assert (await store.get("k")).state == {"n": 1}
        assert await store.keys() == ["k"]
        assert [s.version for s in await store.history("k")] == [1]
        assert await store.delete("k")


async def test_concurrent_async_turns_lose_no_update(store_url: str) -> None:
    async with open_async_store(store_url) as store:

        async def bump() -> None:
            while True:
                try:
                    async with store.turn("c") as turn:
                        turn.state = (turn.state or 0) + 1
                    return
                except Conflict:
                    await asyncio.sleep(0.001)

        await asyncio.gather(*(bump() for _ in range(20)))
        snap = await store.get("c")
        assert snap is not None and (snap.state, snap.version) == (20, 20)


async def test_unopened_store_says_so(store_url: str) -> None:
    store = AsyncStore(store_url)
    with pytest.raises(StoreError, match="not open"):
        await store.get("k")
