"""LangGraph's published checkpointer conformance suite, run on ClrkSaver.

The suite drives only the async methods, so each backend runs it twice: once as is, and
once through :class:`SyncAdapter`, whose async methods call the saver's sync ones. The
suite's own pass counts are printed (``pytest -s``) and every detected capability must
pass. InMemorySaver runs too, as a check that the wiring itself is sound.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.report import CapabilityReport
from langgraph.checkpoint.memory import InMemorySaver

from clrk.state.langgraph import ClrkSaver

BASE_CAPABILITIES = {"put", "put_writes", "get_tuple", "list", "delete_thread"}
ALL_CAPABILITIES = BASE_CAPABILITIES | {"delete_for_runs", "copy_thread", "prune"}


class SyncAdapter(BaseCheckpointSaver[str]):
    """Exposes a saver's *sync* methods under the async names the suite calls."""

    def __init__(self, inner: BaseCheckpointSaver[Any]) -> None:
        super().__init__(serde=inner.serde)
        self.inner = inner

    def get_next_version(self, current: Any, channel: None = None) -> Any:
        return self.inner.get_next_version(current, channel)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.inner.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        found: Iterator[CheckpointTuple] = self.inner.list(
            config, filter=filter, before=before, limit=limit
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
        return self.inner.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self.inner.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.inner.delete_thread(thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.inner.delete_for_runs(run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.inner.copy_thread(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self.inner.prune(thread_ids, strategy=strategy)


async def run_suite(
    name: str,
    make: Callable[[], BaseCheckpointSaver[Any]],
    capabilities: set[str] = ALL_CAPABILITIES,
) -> CapabilityReport:
    opened: list[BaseCheckpointSaver[Any]] = []

    async def factory() -> AsyncIterator[BaseCheckpointSaver[Any]]:
        saver = make()
        opened.append(saver)
        yield saver

    report = await validate(checkpointer_test(name=name)(factory), capabilities=capabilities)
    for saver in opened:
        inner = saver.inner if isinstance(saver, SyncAdapter) else saver
        if isinstance(inner, ClrkSaver):
            inner.close()
    passed = sum(r.tests_passed for r in report.results.values())
    failed = sum(r.tests_failed for r in report.results.values())
    print(f"\n{name}: {passed} passed, {failed} failed ({report.conformance_level()})")
    return report


def assert_full(report: CapabilityReport, capabilities: set[str] = ALL_CAPABILITIES) -> None:
    detected = {cap for cap, r in report.results.items() if r.detected}
    assert detected == capabilities
    failures = [f for r in report.results.values() for f in r.failures]
    assert not failures, "\n".join(failures)
    assert report.passed_all()


def _wrap(mode: str, saver: BaseCheckpointSaver[Any]) -> BaseCheckpointSaver[Any]:
    return SyncAdapter(saver) if mode == "sync" else saver


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_in_memory_saver_passes(mode: str) -> None:
    """LangGraph's own in-memory saver implements the base capabilities only."""
    report = await run_suite(
        f"InMemorySaver[{mode}]", lambda: _wrap(mode, InMemorySaver()), BASE_CAPABILITIES
    )
    assert_full(report, BASE_CAPABILITIES)


@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_clrk_saver_sqlite_passes(mode: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lg.db'}"
    report = await run_suite(
        f"ClrkSaver[sqlite,{mode}]", lambda: _wrap(mode, ClrkSaver.from_url(url))
    )
    assert_full(report)


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["async", "sync"])
async def test_clrk_saver_postgres_passes(mode: str, postgres_url: str) -> None:
    report = await run_suite(
        f"ClrkSaver[postgres,{mode}]", lambda: _wrap(mode, ClrkSaver.from_url(postgres_url))
    )
    assert_full(report)
