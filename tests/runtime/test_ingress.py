"""The ingress over real HTTP (uvicorn on a free port): statuses, dedupe, the envelope."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from clrk.errors import BadRequest, ConfigError, StoreUnavailable, UnknownAgent
from clrk.manifest import TaskAgent
from clrk.runtime.inbox import Inbox
from clrk.runtime.ingress import create_app, status_for
from support import serve

Make = Callable[..., TaskAgent]
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def ingress(db_url: str, make_agent: Make) -> Iterator[tuple[str, Inbox]]:
    with Inbox.open(db_url) as inbox:
        inbox.apply(make_agent("echo", ""))
        with serve(create_app(db_url, max_body_bytes=4096)) as base:
            yield base, inbox


def post(
    base: str, body: bytes | dict[str, object], agent: str = "echo", **headers: str
) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(
        base + "/", content=content, headers={"X-Clrk-TaskAgent": agent, **headers}, timeout=10
    )


def test_stored_event_answers_202_with_its_invocation(ingress: tuple[str, Inbox]) -> None:
    base, inbox = ingress
    response = post(base, {"thread": "t1", "event_id": "Ev1"}, traceparent=TRACE)
    assert response.status_code == 202
    answer = response.json()
    assert answer["duplicate"] is False and answer["status"] == "queued"
    row = inbox.invocation(answer["invocation_id"])
    assert row is not None and row["event_id"] == "Ev1" and row["partition_key"] == "t1"


def test_envelope_carries_subject_trace_and_agent(ingress: tuple[str, Inbox], db_url: str) -> None:
    base, inbox = ingress
    post(base, {"thread": "t9", "text": "hi"}, traceparent=TRACE, **{"X-Clrk-Event-Id": "h-1"})
    claim = inbox.claim("w", 30)
    assert claim is not None
    envelope = json.loads(claim.envelopes[0])
    assert envelope["id"] == "h-1" and envelope["subject"] == "t9"
    assert envelope["traceparent"] == TRACE and envelope["clrkagent"] == "echo"
    assert envelope["data"] == {"thread": "t9", "text": "hi"}
    assert envelope["specversion"] == "1.0"


def test_redelivery_is_a_duplicate_of_the_first(ingress: tuple[str, Inbox]) -> None:
    base, inbox = ingress
    first = post(base, {"thread": "t"}, **{"X-Clrk-Event-Id": "same"}).json()
    again = post(base, {"thread": "t", "retry": 1}, **{"X-Clrk-Event-Id": "same"}).json()
    assert again == {**first, "duplicate": True}
    assert len(inbox.invocations()) == 1
    no_trace = inbox.invocation(first["invocation_id"])
    assert no_trace is not None


@pytest.mark.parametrize(
    ("body", "agent", "status", "words"),
    [
        ({"thread": "t"}, "nobody-here", 404, "nobody-here"),
        (b"{not json", "echo", 400, "not JSON"),
        (b"[1]", "echo", 400, "JSON object"),
        ({"no_thread": 1}, "echo", 400, "partition key"),
        ({"thread": 1.5}, "echo", 400, "partition key"),
        ({"thread": "x" * 5000}, "echo", 413, "limit"),
        ({"thread": "t"}, "", 400, "X-Clrk-TaskAgent"),
        # Bugs: 202 then a dispatcher crash (SQLite), or a 503 the sender retried forever
        # (Postgres), for text no store can keep.
        ({"thread": "a\u0000b"}, "echo", 400, "partition key"),
        ({"thread": "t", "event_id": "Ev\u0000"}, "echo", 400, "event id"),
    ],
)
def test_refusals_store_nothing(
    ingress: tuple[str, Inbox], body: bytes | dict[str, object], agent: str, status: int, words: str
) -> None:
    base, inbox = ingress
    response = post(base, body, agent=agent)
    assert response.status_code == status
    assert words in response.json()["error"]
    assert inbox.invocations() == []


def test_status_table() -> None:
    assert status_for(UnknownAgent("x")) == 404
    assert status_for(BadRequest("x")) == 400
    assert status_for(StoreUnavailable("sqlite:///x", "down")) == 503
    assert status_for(ConfigError("x")) == 500
    assert status_for(RuntimeError("x")) == 500


def test_inbox_that_cannot_be_written_answers_503(tmp_path: Path, make_agent: Make) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    with Inbox.open(url) as inbox:
        inbox.apply(make_agent("echo", ""))
    app = create_app(url, store_options={"timeout_seconds": 0.2})
    with serve(app) as base:
        assert post(base, {"thread": "warm"}).status_code == 202
        blocker = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
        blocker.execute("begin exclusive")  # another process holds the write lock
        try:
            response = post(base, {"thread": "t"})
        finally:
            blocker.execute("rollback")
            blocker.close()
        assert response.status_code == 503
        assert "unavailable" in response.json()["error"]
    with Inbox.open(url) as inbox:
        assert [row["partition_key"] for row in inbox.invocations()] == ["warm"]


def test_database_down_at_startup_answers_503(tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with serve(create_app(f"sqlite:///{blocked}/sub/r.db")) as base:
        response = post(base, {"thread": "t"})
        assert response.status_code == 503
        assert httpx.get(base + "/healthz").status_code == 503
