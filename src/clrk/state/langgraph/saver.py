"""ClrkSaver: a LangGraph checkpointer over a clrk connector (SQLite or Postgres).

Why not LangGraph's own savers: they rewrite a channel's whole value at every version (a
long ``messages`` list costs O(n) per turn), take no lock for ``setup()``, and let a
superseded process overwrite the work of its successor. This saver

* stores list channels as deltas (see :mod:`clrk.state.langgraph._codec`);
* loads a checkpoint in one query and writes one in one statement on Postgres, so a turn
  run with ``durability="exit"`` costs two round trips (load, then write);
* refuses, with :class:`clrk.errors.Conflict`, any write carrying a fencing token lower
  than the highest seen for its key (``CLRK_FENCE`` / ``CLRK_PARTITION_KEY``, set by the
  dispatcher), and changes nothing then.

The sync methods do the I/O; the async ones run them in a worker thread, which is what
the connectors (thread safe, one connection per thread or per call) are built for.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from clrk.errors import ConfigError, Conflict, StoreError
from clrk.state.connector import Connector, Row, open_connector
from clrk.state.langgraph import _codec
from clrk.state.migrate import run_migrations
from clrk.state.queries import load_queries

__all__ = ["FENCE_ENV", "PARTITION_KEY_ENV", "ClrkSaver"]

FENCE_ENV = "CLRK_FENCE"
PARTITION_KEY_ENV = "CLRK_PARTITION_KEY"

_PACKAGE = "clrk.state.langgraph"
_COMPONENT = "langgraph"
# How many (thread, namespace, channel) lists the saver remembers to encode deltas against.
_MEMO_CAPACITY = 1024
_FROM_ENV: Any = object()

T = TypeVar("T")


class ClrkSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on a clrk store.

    Use it where LangGraph's ``PostgresSaver`` or ``SqliteSaver`` was used::

        with ClrkSaver.from_url(os.environ["DATABASE_URL"]) as saver:
            graph = builder.compile(checkpointer=saver)
            graph.invoke(inputs, {"configurable": {"thread_id": key}}, durability="exit")

    ``fence`` and ``fence_key`` default to ``CLRK_FENCE`` and ``CLRK_PARTITION_KEY`` (the
    thread id when no key is given). Writes raise :class:`clrk.errors.Conflict` once a
    higher fence was seen for the key. Tables are created by :meth:`setup`, or on first use.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        serde: SerializerProtocol | None = None,
        fence: int | None = _FROM_ENV,
        fence_key: str | None = _FROM_ENV,
        owns_connector: bool = False,
    ) -> None:
        super().__init__(serde=serde)
        self.connector = connector
        self.fence, self.fence_key = _fence_settings(fence, fence_key)
        self._owns_connector = owns_connector
        self._queries = load_queries(_PACKAGE, connector.dialect)
        # Postgres has one-statement writes; SQLite runs step queries in one transaction.
        self._one_statement = "put_checkpoint" in self._queries
        self._memos: OrderedDict[tuple[str, str, str], _codec.ListMemo] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._setup_lock = threading.Lock()
        self._is_setup = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        serde: SerializerProtocol | None = None,
        fence: int | None = _FROM_ENV,
        fence_key: str | None = _FROM_ENV,
        **connector_options: Any,
    ) -> ClrkSaver:
        """Open ``sqlite:///path`` or ``postgresql://...``; close it (or use ``with``) after.

        ``connector_options`` go to :func:`clrk.state.open_connector`. On Postgres the pool
        defaults to one connection, as LangGraph's saver has: a process running one turn
        gains nothing from more, and each extra connection starts with cold server caches.
        """
        if url.startswith(("postgresql://", "postgres://")):
            connector_options.setdefault("max_size", 1)
        connector = open_connector(url, **connector_options)
        return cls(connector, serde=serde, fence=fence, fence_key=fence_key, owns_connector=True)

    # -- lifecycle -------------------------------------------------------------------------

    def setup(self) -> None:
        """Create or upgrade the tables; safe to call from many processes at once."""
        with self._setup_lock:
            if self._is_setup:
                return
            run_migrations(self.connector, "clrk.state", "state")  # clrk_state holds fences
            run_migrations(self.connector, _PACKAGE, _COMPONENT)
            self._is_setup = True

    def close(self) -> None:
        if self._owns_connector:
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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    # -- reads -----------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = configurable.get("checkpoint_ns", "")
        rows = self._with_schema(
            lambda: self.connector.fetch_all(
                self._queries["load"],
                {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": get_checkpoint_id(config),
                },
            )
        )
        return self._tuple_from_rows(thread_id, ns, rows)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        configurable = (config or {}).get("configurable", {})
        thread_id = configurable.get("thread_id")
        params = {
            "thread_id": None if thread_id is None else str(thread_id),
            "checkpoint_ns": configurable.get("checkpoint_ns"),
            "before": get_checkpoint_id(before) if before else None,
        }
        wanted = get_checkpoint_id(config) if config else None
        candidates = self._with_schema(
            lambda: self.connector.fetch_all(self._queries["list_checkpoints"], params)
        )
        found = 0
        for row in candidates:
            if limit is not None and found >= limit:
                return
            if wanted is not None and row["checkpoint_id"] != wanted:
                continue
            if filter:
                metadata = self.serde.loads_typed((row["metadata_type"], bytes(row["metadata"])))
                if any(metadata.get(k) != v for k, v in filter.items()):
                    continue
            tup = self.get_tuple(
                {
                    "configurable": {
                        "thread_id": row["thread_id"],
                        "checkpoint_ns": row["checkpoint_ns"],
                        "checkpoint_id": row["checkpoint_id"],
                    }
                }
            )
            if tup is not None:
                found += 1
                yield tup

    # -- writes ----------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        ns = configurable.get("checkpoint_ns", "")
        values = checkpoint["channel_values"]
        stored = {**checkpoint, "channel_values": {}}
        checkpoint_type, checkpoint_data = self.serde.dumps_typed(stored)
        full_metadata = get_checkpoint_metadata(config, metadata)
        metadata_type, metadata_data = self.serde.dumps_typed(full_metadata)
        params: dict[str, Any] = {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint["id"],
            "parent_checkpoint_id": configurable.get("checkpoint_id"),
            "checkpoint_type": checkpoint_type,
            "checkpoint": checkpoint_data,
            "metadata_type": metadata_type,
            "metadata": metadata_data,
            "run_id": _text_or_none(full_metadata.get("run_id")),
            "versions_json": _codec.versions_json(checkpoint["channel_versions"]),
            **self._fence_params(thread_id),
        }
        blobs, memos = self._encode_blobs(thread_id, ns, values, new_versions, use_memos=True)
        if not self._with_schema(lambda: self._write_checkpoint(params, blobs)):
            # A delta's base vanished (the thread was pruned or deleted meanwhile): write
            # every list whole instead.
            blobs, memos = self._encode_blobs(thread_id, ns, values, new_versions, use_memos=False)
            if not self._write_checkpoint(params, blobs):
                raise StoreError(f"could not store checkpoint {checkpoint['id']!r}")
        self._remember(thread_id, ns, memos)
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": ns,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if not writes:
            return
        configurable = config["configurable"]
        thread_id = str(configurable["thread_id"])
        # Special channels (error, interrupt, ...) have fixed indexes and replace earlier
        # ones; regular writes are kept as first stored, so a retried task adds nothing.
        upsert = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        encoded = []
        for index, (channel, value) in enumerate(writes):
            value_type, data = self.serde.dumps_typed(value)
            encoded.append((WRITES_IDX_MAP.get(channel, index), channel, value_type, data))
        params = {
            "thread_id": thread_id,
            "checkpoint_ns": configurable.get("checkpoint_ns", ""),
            "checkpoint_id": configurable["checkpoint_id"],
            "task_id": task_id,
            "task_path": task_path,
            **self._fence_params(thread_id),
        }
        self._with_schema(lambda: self._write_writes(params, encoded, upsert))

    # -- maintenance -----------------------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        params = {"thread_id": str(thread_id)}

        def work() -> None:
            with self.connector.transaction():
                for name in ("checkpoints", "blobs", "writes"):
                    self.connector.execute(self._queries[f"delete_thread_{name}"], params)

        self._with_schema(work)
        self._forget(str(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        if not run_ids:
            return

        def work() -> None:
            with self.connector.transaction():
                threads: set[str] = set()
                for run_id in run_ids:
                    rows = self.connector.fetch_all(
                        self._queries["delete_run_checkpoints"], {"run_id": str(run_id)}
                    )
                    threads.update(row["thread_id"] for row in rows)
                for thread_id in sorted(threads):
                    self._drop_orphans(thread_id)

        self._with_schema(work)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        params = {"source": str(source_thread_id), "target": str(target_thread_id)}

        def work() -> None:
            with self.connector.transaction():
                for name in ("checkpoints", "blobs", "writes"):
                    self.connector.execute(self._queries[f"copy_thread_{name}"], params)

        self._with_schema(work)

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """``keep_latest`` keeps each namespace's newest checkpoint and the blobs it needs
        (delta bases included); ``delete`` removes the threads."""
        if strategy not in ("keep_latest", "delete"):
            raise ConfigError(f"unknown prune strategy {strategy!r}: keep_latest or delete")
        for thread_id in thread_ids:
            if strategy == "delete":
                self.delete_thread(thread_id)
                continue

            def work(thread_id: str = str(thread_id)) -> None:
                with self.connector.transaction():
                    self.connector.execute(
                        self._queries["prune_keep_latest"], {"thread_id": thread_id}
                    )
                    self._drop_orphans(thread_id)

            self._with_schema(work)

    def get_next_version(self, current: str | int | float | None, channel: None = None) -> str:
        """``<counter>.<random>``: ordered, and two writers forking one checkpoint never
        produce the same version (a blob version is immutable once stored)."""
        if current is None:
            counter = 0
        elif isinstance(current, str):
            counter = int(current.split(".", 1)[0])
        else:
            counter = int(current)
        return f"{counter + 1:032}.{random.random():.16f}"

    # -- async twins -----------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found = await asyncio.to_thread(
            lambda: [*self.list(config, filter=filter, before=before, limit=limit)]
        )
        for tup in found:
            yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(lambda: self.prune(thread_ids, strategy=strategy))

    # -- internals -------------------------------------------------------------------------

    def _with_schema(self, work: Callable[[], T]) -> T:
        """Run ``work``; if our tables are missing (a fresh database), set up and retry once."""
        try:
            return work()
        except StoreError as exc:
            if self._is_setup or not _missing_table(exc):
                raise
        self.setup()
        return work()

    def _fence_params(self, thread_id: str) -> dict[str, Any]:
        return {"fence": self.fence, "fence_key": self.fence_key or thread_id}

    def _encode_blobs(
        self,
        thread_id: str,
        ns: str,
        values: dict[str, Any],
        new_versions: ChannelVersions,
        *,
        use_memos: bool,
    ) -> tuple[list[_codec.BlobRow], dict[str, _codec.ListMemo]]:
        rows: list[_codec.BlobRow] = []
        memos: dict[str, _codec.ListMemo] = {}
        for channel, version in new_versions.items():
            key = _codec.version_key(version)
            if channel not in values:
                rows.append(_codec.empty_channel(channel, key))
                continue
            memo = self._recall(thread_id, ns, channel) if use_memos else None
            row, new_memo = _codec.encode_channel(self.serde, channel, key, values[channel], memo)
            rows.append(row)
            if new_memo is not None:
                memos[channel] = new_memo
        return rows, memos

    def _write_checkpoint(self, params: dict[str, Any], blobs: list[_codec.BlobRow]) -> bool:
        """Store blobs and checkpoint atomically. False when a delta base is missing;
        Conflict when a newer fence holder exists."""
        if self._one_statement:
            row = self.connector.fetch_one(
                self._queries["put_checkpoint"],
                {
                    **params,
                    "channels": [b.channel for b in blobs],
                    "versions": [b.version for b in blobs],
                    "kinds": [b.kind for b in blobs],
                    "bases": [b.base_version for b in blobs],
                    "depths": [b.depth for b in blobs],
                    "chain_bytes": [b.chain_bytes for b in blobs],
                    "value_types": [b.value_type for b in blobs],
                    "blob_values": [b.value for b in blobs],
                },
            )
            assert row is not None  # the statement always returns its verdict
            self._check_fence(row["fenced_ok"], row["found_fence"], params)
            return bool(row["bases_ok"])
        try:
            with self.connector.transaction():
                self._step_blobs(params, blobs)
                self.connector.execute(self._queries["checkpoint_upsert"], params)
        except _BaseMissing:
            return False  # rolled back: nothing written
        return True

    def _step_blobs(self, params: dict[str, Any], blobs: list[_codec.BlobRow]) -> None:
        self._step_fence(params)
        scope = {"thread_id": params["thread_id"], "checkpoint_ns": params["checkpoint_ns"]}
        for blob in blobs:
            if blob.kind == _codec.KIND_DELTA and not self.connector.fetch_one(
                self._queries["blob_exists"],
                {**scope, "channel": blob.channel, "version": blob.base_version},
            ):
                raise _BaseMissing
            self.connector.execute(
                self._queries["blob_insert"],
                {
                    **scope,
                    "channel": blob.channel,
                    "version": blob.version,
                    "kind": blob.kind,
                    "base_version": blob.base_version,
                    "depth": blob.depth,
                    "chain_bytes": blob.chain_bytes,
                    "value_type": blob.value_type,
                    "value": blob.value,
                },
            )

    def _write_writes(
        self,
        params: dict[str, Any],
        encoded: list[tuple[int, str, str, bytes]],
        upsert: bool,
    ) -> None:
        if self._one_statement:
            name = "put_writes_upsert" if upsert else "put_writes_insert"
            row = self.connector.fetch_one(
                self._queries[name],
                {
                    **params,
                    "idxs": [idx for idx, _, _, _ in encoded],
                    "channels": [channel for _, channel, _, _ in encoded],
                    "value_types": [value_type for _, _, value_type, _ in encoded],
                    "write_values": [data for _, _, _, data in encoded],
                },
            )
            assert row is not None
            self._check_fence(row["fenced_ok"], row["found_fence"], params)
            return
        name = "write_upsert" if upsert else "write_insert"
        with self.connector.transaction():
            self._step_fence(params)
            for idx, channel, value_type, data in encoded:
                self.connector.execute(
                    self._queries[name],
                    {
                        **params,
                        "idx": idx,
                        "channel": channel,
                        "value_type": value_type,
                        "value": data,
                    },
                )

    def _step_fence(self, params: dict[str, Any]) -> None:
        if params["fence"] is None:
            return
        if self.connector.fetch_one(self._queries["fence_upsert"], params) is None:
            found = self.connector.fetch_one(self._queries["fence_found"], params)
            self._check_fence(False, found["fence"] if found else None, params)

    @staticmethod
    def _check_fence(ok: Any, found: Any, params: dict[str, Any]) -> None:
        if not ok:
            raise Conflict(params["fence_key"], "fence", params["fence"], found)

    def _drop_orphans(self, thread_id: str) -> None:
        self.connector.execute(self._queries["delete_orphan_writes"], {"thread_id": thread_id})
        self.connector.execute(self._queries["delete_orphan_blobs"], {"thread_id": thread_id})
        self._forget(thread_id)

    def _tuple_from_rows(self, thread_id: str, ns: str, rows: list[Row]) -> CheckpointTuple | None:
        head = next((row for row in rows if row["part"] == "checkpoint"), None)
        if head is None:
            return None
        blobs = [
            _codec.BlobRow(
                channel=row["a"],
                version=row["b"],
                kind=row["c"],
                base_version=row["t2"],
                depth=row["n"] or 0,
                chain_bytes=row["m"] or 0,
                value_type=row["t1"],
                value=None if row["d1"] is None else bytes(row["d1"]),
            )
            for row in rows
            if row["part"] == "blob"
        ]
        versions: dict[str, str] = json.loads(head["c"])
        values, memos = _codec.decode_channels(self.serde, versions, blobs)
        checkpoint: Checkpoint = self.serde.loads_typed((head["t1"], bytes(head["d1"])))
        checkpoint["channel_values"] = values
        metadata: CheckpointMetadata = self.serde.loads_typed((head["t2"], bytes(head["d2"])))
        writes = sorted(
            (row for row in rows if row["part"] == "write"),
            key=lambda row: (row["c"] or "", row["a"], row["n"]),  # writes_sort_key order
        )
        self._remember(thread_id, ns, memos)
        parent_id = head["b"]
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": head["a"],
                }
            },
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config=(
                {
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": ns,
                        "checkpoint_id": parent_id,
                    }
                }
                if parent_id
                else None
            ),
            pending_writes=[
                (row["a"], row["b"], self.serde.loads_typed((row["t1"], bytes(row["d1"]))))
                for row in writes
            ],
        )

    def _recall(self, thread_id: str, ns: str, channel: str) -> _codec.ListMemo | None:
        with self._memo_lock:
            return self._memos.get((thread_id, ns, channel))

    def _remember(self, thread_id: str, ns: str, memos: dict[str, _codec.ListMemo]) -> None:
        with self._memo_lock:
            for channel, memo in memos.items():
                key = (thread_id, ns, channel)
                self._memos[key] = memo
                self._memos.move_to_end(key)
            while len(self._memos) > _MEMO_CAPACITY:
                self._memos.popitem(last=False)

    def _forget(self, thread_id: str) -> None:
        with self._memo_lock:
            for key in [key for key in self._memos if key[0] == thread_id]:
                del self._memos[key]


class _BaseMissing(Exception):
    """A delta's base version is gone; the put is retried with whole lists."""


def _fence_settings(fence: Any, fence_key: Any) -> tuple[int | None, str | None]:
    if fence is _FROM_ENV:
        raw = os.environ.get(FENCE_ENV, "").strip()
        try:
            fence = int(raw) if raw else None
        except ValueError as exc:
            raise ConfigError(f"{FENCE_ENV} must be an integer, got {raw!r}") from exc
    if fence_key is _FROM_ENV:
        fence_key = os.environ.get(PARTITION_KEY_ENV) or None
    return fence, fence_key


def _missing_table(exc: StoreError) -> bool:
    # Both drivers name the missing relation: 'relation "clrk_lg_..." does not exist' and
    # 'no such table: clrk_lg_...'. Only our own tables trigger a setup.
    text = str(exc)
    return ("does not exist" in text or "no such table" in text) and (
        "clrk_lg_" in text or "clrk_state" in text
    )


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)
