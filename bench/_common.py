"""Shared pieces of the LangGraph benchmarks: the graph, databases, and what we count.

Round trips and bytes sent to Postgres are counted by a small TCP relay in its own
process between the saver and the server: a round trip is a burst of client bytes that
follows a server answer (so a pipelined batch counts once), minus each connection's
start-up and Terminate messages. SQLite is in-process and has no round trips; there we count the
statements run and the bytes of their bound parameters (sqlite3's trace callback).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import re
import selectors
import socket
import sqlite3
import statistics
import uuid
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from clrk.agents.model import DeterministicChatModel

ADMIN_URL = os.environ.get(
    "CLRK_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
THREAD_ID = "C0BENCH:1700000000.000100"


def build_graph() -> StateGraph:
    """One model node over a messages channel, with the deterministic (fake) chat model."""
    model = DeterministicChatModel()
    graph = StateGraph(MessagesState)
    graph.add_node("model", lambda state: {"messages": [model.invoke(state["messages"])]})
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    return graph


def user_message(turn: int, sender: str = "U1") -> HumanMessage:
    text = f"turn {turn} from {sender}: could you look at the deploy log and tell me what changed"
    return HumanMessage(content=text, name=sender)


# -- Postgres databases ---------------------------------------------------------------------


@contextlib.contextmanager
def fresh_postgres(label: str) -> Iterator[str]:
    """A new database for one series, dropped afterwards."""
    name = f"clrk_bench_{label}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield with_database(ADMIN_URL, name)
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def with_database(url: str, name: str, *, host: str | None = None, port: int | None = None) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if host is not None:
        user = netloc.rsplit("@", 1)[0] + "@" if "@" in netloc else ""
        netloc = f"{user}{host}:{port}"
    # No TLS or GSS negotiation: a connection costs exactly two client bursts, its start-up
    # message and its Terminate, which the counts below take off.
    query = "sslmode=disable&gssencmode=disable"
    return urlunsplit((parts.scheme, netloc, f"/{name}", query, ""))


def postgres_stored_bytes(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "select coalesce(sum(pg_total_relation_size(relid)), 0) from pg_stat_user_tables"
        ).fetchone()
    return int(row[0]) if row else 0


# -- counting relay -------------------------------------------------------------------------


class Relay:
    """A TCP relay to Postgres in a child process; counts round trips and bytes sent."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._counts = mp.Array("q", 3)  # bursts, bytes from client, connections
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._process = mp.Process(
            target=_relay_loop, args=(listener, self._target, self._counts), daemon=True
        )
        self._process.start()
        listener.close()

    def url(self, direct_url: str) -> str:
        name = urlsplit(direct_url).path.lstrip("/")
        return with_database(direct_url, name, host="127.0.0.1", port=self.port)

    def snapshot(self) -> tuple[int, int, int]:
        with self._counts.get_lock():
            return self._counts[0], self._counts[1], self._counts[2]

    def close(self) -> None:
        self._process.terminate()
        self._process.join(5)


def _relay_loop(listener: socket.socket, target: tuple[str, int], counts: Any) -> None:
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    peers: dict[socket.socket, socket.socket] = {}
    client_side: set[socket.socket] = set()
    last_from_server: dict[socket.socket, bool] = {}
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            if sock is listener:
                client, _ = listener.accept()
                server = socket.create_connection(target)
                for s in (client, server):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    sel.register(s, selectors.EVENT_READ, None)
                peers[client], peers[server] = server, client
                client_side.add(client)
                last_from_server[client] = True
                with counts.get_lock():
                    counts[2] += 1
                continue
            assert isinstance(sock, socket.socket)
            if sock not in peers:  # closed earlier in this batch of events
                continue
            try:
                data = sock.recv(1 << 16)
            except OSError:
                data = b""
            other = peers.get(sock)
            if not data or other is None:
                for s in (sock, other):
                    if s is not None and s in peers:
                        sel.unregister(s)
                        s.close()
                        peers.pop(s, None)
                        client_side.discard(s)
                continue
            if sock in client_side:
                with counts.get_lock():
                    if last_from_server[sock]:
                        counts[0] += 1
                    counts[1] += len(data)
                last_from_server[sock] = False
            else:
                last_from_server[other] = True
            other.sendall(data)


# -- SQLite statement counting --------------------------------------------------------------

_HEX_BLOB = re.compile(r"x'([0-9a-fA-F]*)'")


class SqliteCounter:
    """Counts statements and the bytes of their expanded SQL (blobs counted as raw bytes)."""

    def __init__(self) -> None:
        self.statements = 0
        self.bytes = 0
        self._original = sqlite3.connect

    def _trace(self, statement: str) -> None:
        self.statements += 1
        blobs = _HEX_BLOB.findall(statement)
        self.bytes += len(statement) - sum(len(b) // 2 + 3 for b in blobs)

    def install(self) -> None:
        original = self._original

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = original(*args, **kwargs)
            conn.set_trace_callback(self._trace)
            return conn

        sqlite3.connect = connect  # type: ignore[assignment]

    def uninstall(self) -> None:
        sqlite3.connect = self._original  # type: ignore[assignment]

    def snapshot(self) -> tuple[int, int]:
        return self.statements, self.bytes


def sqlite_stored_bytes(path: str) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("pragma wal_checkpoint(truncate)")
    total = os.path.getsize(path)
    for suffix in ("-wal",):
        if os.path.exists(path + suffix):
            total += os.path.getsize(path + suffix)
    return total


# -- output ---------------------------------------------------------------------------------


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000 if samples else float("nan")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for index, row in enumerate(cells):
        print(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if index == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
