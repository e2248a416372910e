"""ClrkSaver beyond the conformance suite: fencing, the state layer's fence, a fresh
process per turn, setup under concurrency, and the per-dialect SQL files."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.conformance.test_utils import (
    generate_checkpoint,
    generate_config,
    generate_metadata,
)

from clrk.errors import ConfigError, Conflict
from clrk.state import load_queries, open_store
from clrk.state.langgraph import ClrkSaver
from clrk.state.langgraph.saver import FENCE_ENV, PARTITION_KEY_ENV


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'saver.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


def put_one(saver: ClrkSaver, thread: str, parent: Any = None, **values: Any) -> Any:
    config = generate_config(thread)
    if parent is not None:
        config["configurable"]["checkpoint_id"] = parent["configurable"]["checkpoint_id"]
    checkpoint = generate_checkpoint(
        channel_values=values, channel_versions=dict.fromkeys(values, 1)
    )
    return saver.put(config, checkpoint, generate_metadata(), dict.fromkeys(values, 1))


def test_lower_fence_is_refused_and_changes_nothing(url: str) -> None:
    with (
        ClrkSaver.from_url(url, fence=5, fence_key="k") as current,
        ClrkSaver.from_url(url, fence=3, fence_key="k") as stale,
    ):
        first = put_one(current, "t", msg="from the current holder")
        with pytest.raises(Conflict) as refused:
            put_one(stale, "t", parent=first, msg="from a superseded holder")
        assert (refused.value.kind, refused.value.expected, refused.value.found) == ("fence", 3, 5)
        with pytest.raises(Conflict):
            stale.put_writes(first, [("msg", "late write")], "task-1")
        latest = current.get_tuple(generate_config("t"))
        assert latest is not None
        assert latest.checkpoint["channel_values"] == {"msg": "from the current holder"}
        assert latest.pending_writes == []
        assert len(list(current.list(generate_config("t")))) == 1
        # The same or a higher fence writes on.
        put_one(current, "t", parent=first, msg="again")
        with ClrkSaver.from_url(url, fence=6, fence_key="k") as newer:
            put_one(newer, "t", msg="newest")


def test_fence_comes_from_the_dispatcher_environment(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FENCE_ENV, "9")
    monkeypatch.setenv(PARTITION_KEY_ENV, "slack:T:C:1.2")
    with ClrkSaver.from_url(url) as saver:
        assert (saver.fence, saver.fence_key) == (9, "slack:T:C:1.2")
        put_one(saver, "t", msg="x")
    monkeypatch.setenv(FENCE_ENV, "8")
    with ClrkSaver.from_url(url) as stale, pytest.raises(Conflict):
        put_one(stale, "t", msg="y")
    monkeypatch.setenv(FENCE_ENV, "eight")
    with pytest.raises(ConfigError, match=FENCE_ENV):
        ClrkSaver.from_url(url)


def test_fences_are_shared_with_the_state_layer(url: str) -> None:
    """A turn taken with a higher fence supersedes the saver, and the other way round."""
    with open_store(url) as store, store.turn("key-1", fence=7):
        pass
    with ClrkSaver.from_url(url, fence=6, fence_key="key-1") as stale, pytest.raises(Conflict):
        put_one(stale, "t", msg="stale")
    with ClrkSaver.from_url(url, fence=10, fence_key="key-1") as newer:
        put_one(newer, "t", msg="newer")
    with open_store(url) as store, pytest.raises(Conflict), store.turn("key-1", fence=8):
        pass


def test_without_a_fence_nothing_is_checked(url: str) -> None:
    with ClrkSaver.from_url(url, fence=None, fence_key=None) as saver:
        assert put_one(saver, "t", msg="x")["configurable"]["checkpoint_id"]


def test_setup_is_safe_from_many_threads_at_once(url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            with ClrkSaver.from_url(url, fence=None, fence_key=None) as saver:
                saver.setup()
                saver.setup()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


FRESH_PROCESS = textwrap.dedent(
    """
    import json, sys
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.graph import END, START, MessagesState, StateGraph
    from clrk.state.langgraph import ClrkSaver

    def model(state):
        return {"messages": [AIMessage(content=f"seen {len(state['messages'])}")]}

    graph = StateGraph(MessagesState)
    graph.add_node("model", model)
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    with ClrkSaver.from_url(sys.argv[1]) as saver:
        app = graph.compile(checkpointer=saver)
        out = app.invoke({"messages": [HumanMessage(sys.argv[2])]},
                         {"configurable": {"thread_id": "thread-1"}})
    print(json.dumps([m.content for m in out["messages"]]))
    """
)


def test_a_fresh_process_per_turn_keeps_the_thread(url: str) -> None:
    """Each turn opens the URL (no setup call), runs one invocation and exits."""
    seen = []
    for text in ("first", "second"):
        done = subprocess.run(
            [sys.executable, "-c", FRESH_PROCESS, url, text],
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ":".join(sys.path)},
        )
        assert done.returncode == 0, done.stderr
        seen.append(done.stdout.strip())
    assert seen[0] == '["first", "seen 1"]'
    assert seen[1] == '["first", "seen 1", "second", "seen 3"]'


def test_the_one_statement_writes_are_the_postgres_extras() -> None:
    """Both dialects define the same queries, except how a write is batched (see sqlite.sql)."""
    postgres = set(load_queries("clrk.state.langgraph", "postgres"))
    sqlite = set(load_queries("clrk.state.langgraph", "sqlite"))
    assert postgres - sqlite == {"put_checkpoint", "put_writes_insert", "put_writes_upsert"}
    assert sqlite - postgres == {
        "fence_upsert",
        "fence_found",
        "blob_exists",
        "blob_insert",
        "checkpoint_upsert",
        "write_insert",
        "write_upsert",
    }


def test_reference_graph_with_deterministic_model(url: str) -> None:
    """The agents' chat model through the saver: the second turn sees the first."""
    from langgraph.graph import END, START, MessagesState, StateGraph

    from clrk.agents.model import DeterministicChatModel

    model = DeterministicChatModel()
    graph = StateGraph(MessagesState)
    graph.add_node("model", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    config = {"configurable": {"thread_id": "th"}}
    replies = []
    for text in ("hello there", "and again"):
        with ClrkSaver.from_url(url, fence=None, fence_key=None) as saver:
            out = graph.compile(checkpointer=saver).invoke(
                {"messages": [HumanMessage(text)]}, config, durability="exit"
            )
            replies.append(out["messages"][-1].content)
    assert len(out["messages"]) == 4
    assert replies[0] != replies[1]


def _plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _plan_nodes(child)


@pytest.mark.postgres
def test_postgres_load_follows_the_delta_chain_by_key(postgres_url: str) -> None:
    """Bug: on a fresh (never analyzed) table, each step of the delta chain scanned every
    blob of the thread (8-11 ms at 300 turns instead of 2.5 ms). Each step must be a
    primary-key lookup, whatever the planner believes about the table."""
    import psycopg

    def item(i: int) -> str:
        return f"message {i} " + "x" * 100  # lists under 1 KiB are always written whole

    with ClrkSaver.from_url(postgres_url, fence=None, fence_key=None) as saver:
        config = put_one(saver, "t", msgs=[item(0)])
        for turn in range(1, 60):  # a chain of deltas, one appended item each
            checkpoint = generate_checkpoint(
                channel_values={"msgs": [item(i) for i in range(turn + 1)]},
                channel_versions={"msgs": turn + 1},
            )
            config = saver.put(config, checkpoint, generate_metadata(), {"msgs": turn + 1})
    sql = load_queries("clrk.state.langgraph", "postgres")["load"]
    params = {"thread_id": "t", "checkpoint_ns": "", "checkpoint_id": None}
    from clrk.state.postgres import to_pyformat

    with psycopg.connect(postgres_url) as conn:
        plan = conn.execute(
            "explain (analyze, format json) " + to_pyformat(sql), params
        ).fetchone()[0][0]["Plan"]
    removed = sum(node.get("Rows Removed by Join Filter", 0) for node in _plan_nodes(plan))
    assert removed == 0, "a chain step read blobs it did not need"
    with ClrkSaver.from_url(postgres_url, fence=None, fence_key=None) as saver:
        latest = saver.get_tuple(generate_config("t"))
    assert latest is not None
    assert latest.checkpoint["channel_values"]["msgs"] == [item(i) for i in range(60)]
